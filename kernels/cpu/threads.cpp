#include "kernels/cpu/threads.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "nn/error.h"

// From OpenBLAS (also in its cblas.h; declared here so that this file does not
// depend on which cblas.h the include path finds).
extern "C" void openblas_set_num_threads(int num_threads);

namespace covidrate::cpu {

namespace {
int read_thread_count() {
  int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (const char* env = std::getenv("COVIDRATE_THREADS"); env && *env) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    CR_CHECK(*end == '\0' && v >= 1 && v <= 1024,
             "COVIDRATE_THREADS: expected a thread count from 1 to 1024, got '" << env << "'");
    n = static_cast<int>(v);
  }
  openblas_set_num_threads(1);  // see threads.h: we split the work, each gemm runs on one thread
  return n;
}

// True on the pool's workers, and on a caller while it runs its share of a
// job: a parallel_chunks from inside a chunk runs serially instead of waiting
// for workers that are busy with the outer job.
thread_local bool t_inside_job = false;

// num_threads() - 1 workers, started once, asleep on a condition variable
// between jobs. A training step at width 0.25 runs hundreds of parallel ops of
// a millisecond or less; starting threads per op cost each one a clone, a stack
// and its page faults. Sleeping rather than spinning keeps an idle engine from
// taking cores from the next op's threads or from other processes.
//
// Jobs of several threads share the workers: `segment` prepares the next batch
// on one thread and puts the last one back on another while the network runs,
// and writes the volumes beside the pictures. When the pool took one job at a
// time, the second caller ran its whole job alone on its own thread (a batch
// of 16 slices prepared serially took longer than the GPU's forward pass).
// Now each worker takes the next chunk of the oldest job that has one left,
// and each caller works through its own job's chunks.
class WorkerPool {
 public:
  explicit WorkerPool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Runs job(chunk) for every chunk in [0, chunks) on the calling thread and
  // whichever workers are free; returns when all have finished.
  void run(int64_t chunks, const std::function<void(int64_t)>& job) {
    Job j{&job, chunks, 0, chunks, {}};
    std::unique_lock<std::mutex> lock(mu_);
    open_.push_back(&j);
    wake_.notify_all();
    t_inside_job = true;
    while (j.next < j.chunks) run_chunk(j, lock);
    // The job lives on this stack: wait until no worker still runs one of its
    // chunks (they notify under mu_, so none touches it after this returns).
    j.done.wait(lock, [&] { return j.unfinished == 0; });
    t_inside_job = false;
  }

 private:
  struct Job {
    const std::function<void(int64_t)>* fn;
    int64_t chunks, next, unfinished;
    std::condition_variable done;
  };

  void work() {
    t_inside_job = true;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !open_.empty(); });
      if (stopping_) return;
      run_chunk(*open_.front(), lock);
    }
  }

  // Hands out the next chunk of j and runs it; lock holds mu_ on entry and
  // exit, released while the chunk runs. A job leaves open_ with its last chunk.
  void run_chunk(Job& j, std::unique_lock<std::mutex>& lock) {
    const int64_t chunk = j.next++;
    if (j.next == j.chunks) open_.erase(std::find(open_.begin(), open_.end(), &j));
    lock.unlock();
    (*j.fn)(chunk);
    lock.lock();
    if (--j.unfinished == 0) j.done.notify_all();
  }

  std::mutex mu_;  // guards everything below and every Job's counters
  std::condition_variable wake_;
  std::deque<Job*> open_;  // jobs with chunks not yet handed out, oldest first
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

WorkerPool& pool() {
  static WorkerPool workers(num_threads() - 1);
  return workers;
}
}  // namespace

int num_threads() {
  static const int n = read_thread_count();
  return n;
}

int64_t chunk_count(int64_t n, int64_t min_chunk) {
  if (n <= 0) return 0;
  return std::clamp<int64_t>(n / std::max<int64_t>(1, min_chunk), 1, num_threads());
}

void parallel_chunks(int64_t n, int64_t chunks,
                     const std::function<void(int64_t, int64_t, int64_t)>& body) {
  if (n <= 0 || chunks <= 0) return;
  auto bound = [&](int64_t i) { return n * i / chunks; };
  const std::function<void(int64_t)> job = [&](int64_t i) { body(i, bound(i), bound(i + 1)); };
  if (chunks > 1 && !t_inside_job) return pool().run(chunks, job);
  // One chunk, or a call from inside a chunk (whose workers are busy with the outer job).
  for (int64_t i = 0; i < chunks; ++i) job(i);
}

void parallel_for(int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t, int64_t)>& body) {
  parallel_chunks(n, chunk_count(n, min_chunk),
                  [&](int64_t, int64_t begin, int64_t end) { body(begin, end); });
}

}  // namespace covidrate::cpu
