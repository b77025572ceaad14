// A fixed pool of worker threads shared by every op. The calling (JS) thread takes part in each job, so a
// pool of N threads uses N − 1 workers. Jobs are split into chunks handed out through an atomic counter.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu/common.h"

namespace moa {
namespace {

int configuredThreads() {
  if (const char* env = std::getenv("MOA_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : threads_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { workerLoop(); });
    // The pool lives until the process exits; workers sleep on a condition variable when idle.
    for (auto& worker : workers_) worker.detach();
  }

  int threads() const { return threads_; }

  void run(int64_t count, int64_t chunk, const std::function<void(int64_t, int64_t)>& body) {
    std::lock_guard<std::mutex> serial(callMutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      count_ = count;
      chunk_ = chunk;
      next_.store(0);
      error_ = nullptr;
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work() {
    for (;;) {
      const int64_t begin = next_.fetch_add(chunk_);
      if (begin >= count_) return;
      try {
        (*body_)(begin, std::min(begin + chunk_, count_));
      } catch (...) {
        std::lock_guard<std::mutex> lock(errorMutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void workerLoop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex callMutex_;  // one job at a time (several JS threads may call)
  std::mutex mutex_;
  std::mutex errorMutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;
  int active_ = 0;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
  int64_t chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool* instance = new ThreadPool(configuredThreads());
  return *instance;
}

}  // namespace

int threadCount() { return pool().threads(); }

void parallelFor(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  ThreadPool& p = pool();
  if (p.threads() == 1 || count <= grain) {
    body(0, count);
    return;
  }
  // About four chunks per thread balances uneven work (attention rows of different lengths).
  const int64_t chunk = std::max(grain, (count + 4 * p.threads() - 1) / (4 * p.threads()));
  p.run(count, chunk, body);
}

}  // namespace moa
