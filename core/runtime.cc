#include "core/runtime.h"

namespace irsafs {

void FetchThread::start() {
  thread_ = std::jthread([this](std::stop_token stop) { loop(stop); });
}

FetchThread::~FetchThread() { stop(); }

void FetchThread::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void FetchThread::launch(std::function<void(FetchResult)> done) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(done));
  }
  cv_.notify_one();
}

void FetchThread::loop(std::stop_token stop) {
  for (;;) {
    std::function<void(FetchResult)> done;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, stop, [this] { return !queue_.empty(); });
      if (queue_.empty()) break;  // stop requested with nothing queued
      done = std::move(queue_.front());
      queue_.pop_front();
    }
    // A stop during the fetch cancels it; `done` still gets its (cancelled) result.
    done(fetcher_.fetch(stop));
  }
  // Queued launches after a stop are answered as cancelled so no waiter is left hanging.
  std::deque<std::function<void(FetchResult)>> left;
  {
    std::lock_guard lock(mu_);
    left.swap(queue_);
  }
  for (auto& done : left) {
    FetchResult r;
    r.cancelled = true;
    r.error = "fetch cancelled";
    done(std::move(r));
  }
}

void Ticker::start() {
  thread_ = std::jthread([this](std::stop_token stop) { loop(stop); });
}

Ticker::~Ticker() { stop(); }

void Ticker::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void Ticker::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_one();
}

void Ticker::loop(std::stop_token stop) {
  while (!stop.stop_requested()) {
    service_.tick();
    const auto next = service_.next_wakeup();
    std::unique_lock lock(mu_);
    auto woken = [this] { return woken_; };
    if (next) {
      cv_.wait_until(lock, stop, *next, woken);
    } else {
      cv_.wait(lock, stop, woken);
    }
    woken_ = false;
  }
}

}  // namespace irsafs
