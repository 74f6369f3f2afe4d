// How many CPU threads the engine uses, and how work is split among them.
//
// COVIDRATE_THREADS (a positive integer) if set, else the hardware's thread
// count. The engine parallelizes each op itself, over independent pieces of
// work (bands of output rows, groups of channels), so OpenBLAS is set to one
// thread: a threaded gemm inside our threads would oversubscribe the cores, and
// OpenBLAS's per-call thread handshakes cost more than they bring on the
// mid-sized gemms a convolution band makes (see kernels/cpu/conv2d.cpp).
#pragma once
#include <cstdint>
#include <functional>

namespace covidrate::cpu {

// The configured thread count (read once, >= 1).
int num_threads();

// How many chunks parallel_chunks should cut n items into: up to num_threads(),
// but no chunk smaller than min_chunk items (at least one chunk when n > 0).
int64_t chunk_count(int64_t n, int64_t min_chunk);

// Calls body(chunk, begin, end) for `chunks` contiguous, near-equal chunks of
// [0, n), spread over the calling thread and a pool of num_threads() - 1
// workers that sleep between calls; returns when every chunk is done. The chunk
// index lets the body use per-chunk scratch space. Calls from several threads
// at once share the workers (each takes the next chunk of the oldest call); a
// call from inside a chunk runs its chunks serially on the calling thread.
// body must not throw.
void parallel_chunks(int64_t n, int64_t chunks,
                     const std::function<void(int64_t chunk, int64_t begin, int64_t end)>& body);

// Calls body(begin, end) on up to num_threads() contiguous chunks of [0, n),
// none smaller than min_chunk items (so tiny loops run serially, without waking
// workers). body must not throw.
void parallel_for(int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace covidrate::cpu
