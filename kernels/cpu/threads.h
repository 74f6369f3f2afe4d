// How many CPU threads the engine uses, and a minimal parallel loop.
//
// One number governs both our own loops and OpenBLAS's gemm threads:
// COVIDRATE_THREADS if set (a positive integer), else the hardware's thread
// count. Reading it also calls openblas_set_num_threads, so a program that
// asks for 2 threads does not get OpenBLAS's default of every core on top.
#pragma once
#include <cstdint>
#include <functional>

namespace covidrate::cpu {

// The configured thread count (read once, >= 1).
int num_threads();

// Calls body(begin, end) on disjoint chunks covering [0, n), at most
// num_threads() chunks run at once, the calling thread runs one of them. Runs
// serially when n < 2 * min_chunk, so tiny loops do not pay for thread starts.
// body must not throw.
void parallel_for(int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace covidrate::cpu
