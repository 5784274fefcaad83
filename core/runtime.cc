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
    queue_.emplace_back(++launched_, std::move(done));
  }
  cv_.notify_one();
}

void FetchThread::cancel() {
  std::lock_guard lock(mu_);
  cancelled_through_ = launched_;
  running_.request_stop();
}

namespace {

FetchResult cancelled_result() {
  FetchResult r;
  r.cancelled = true;
  r.error = "fetch cancelled";
  return r;
}

}  // namespace

void FetchThread::loop(std::stop_token stop) {
  for (;;) {
    std::function<void(FetchResult)> done;
    std::stop_source own;
    bool cancelled = false;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, stop, [this] { return !queue_.empty(); });
      if (queue_.empty()) break;  // stop requested with nothing queued
      cancelled = queue_.front().first <= cancelled_through_;
      done = std::move(queue_.front().second);
      queue_.pop_front();
      running_ = own;
    }
    FetchResult result;
    if (cancelled) {
      result = cancelled_result();
    } else {
      // A stop of the thread, or cancel(), during the fetch cancels it; `done` still gets its
      // (cancelled) result.
      std::stop_callback on_stop(stop, [&own] { own.request_stop(); });
      try {
        result = source_.fetch(own.get_token());
      } catch (const std::exception& e) {
        // Never let an exception end the daemon from this thread (std::terminate): the
        // fetch fails with the reason, and readers get EIO.
        result = FetchResult{};
        result.error = std::string("internal error: ") + e.what();
      } catch (...) {
        result = FetchResult{};
        result.error = "internal error";
      }
    }
    done(std::move(result));
  }
  // Queued launches after a stop are answered as cancelled so no waiter is left hanging.
  std::deque<std::pair<std::uint64_t, std::function<void(FetchResult)>>> left;
  {
    std::lock_guard lock(mu_);
    left.swap(queue_);
  }
  for (auto& [id, done] : left) done(cancelled_result());
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
