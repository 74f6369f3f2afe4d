#include "kernels/cpu/threads.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
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

  // Runs job(chunk) for every chunk in [0, chunks) on the workers and the
  // calling thread; returns when all have finished. false, running nothing,
  // when another thread's job holds the pool.
  bool try_run(int64_t chunks, const std::function<void(int64_t)>& job) {
    std::unique_lock<std::mutex> owner(run_mu_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      chunks_ = chunks;
      next_ = 0;
      unfinished_ = chunks;
      ++generation_;
    }
    wake_.notify_all();
    t_inside_job = true;
    std::unique_lock<std::mutex> lock(mu_);
    run_chunks(lock);
    finished_.wait(lock, [&] { return unfinished_ == 0; });
    job_ = nullptr;
    t_inside_job = false;
    return true;
  }

 private:
  void work() {
    t_inside_job = true;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      run_chunks(lock);
    }
  }

  // Takes chunks of the current job until none is left; lock holds mu_ on
  // entry and exit, released while a chunk runs.
  void run_chunks(std::unique_lock<std::mutex>& lock) {
    while (job_ && next_ < chunks_) {
      const int64_t chunk = next_++;
      const std::function<void(int64_t)>& job = *job_;
      lock.unlock();
      job(chunk);
      lock.lock();
      if (--unfinished_ == 0) finished_.notify_one();
    }
  }

  std::mutex run_mu_;  // held by the thread whose job the pool runs
  std::mutex mu_;      // guards everything below
  std::condition_variable wake_, finished_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t chunks_ = 0, next_ = 0, unfinished_ = 0;
  uint64_t generation_ = 0;  // counts jobs, so that a worker takes part in each once
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
  if (chunks > 1 && !t_inside_job && pool().try_run(chunks, job)) return;
  // One chunk, a call from inside a chunk, or a pool busy with another thread's job.
  for (int64_t i = 0; i < chunks; ++i) job(i);
}

void parallel_for(int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t, int64_t)>& body) {
  parallel_chunks(n, chunk_count(n, min_chunk),
                  [&](int64_t, int64_t begin, int64_t end) { body(begin, end); });
}

}  // namespace covidrate::cpu
