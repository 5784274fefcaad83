// The threads that drive a ConfigService in the daemon:
//  - FetchThread runs fetches (at most one at a time, as the service asks) and reports back;
//  - Ticker sleeps until the service's next deadline and calls tick().
// See docs/THREADING.md.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <stop_token>
#include <thread>

#include "core/config_service.h"
#include "fetcher/source.h"

namespace irsafs {

class FetchThread final : public FetchLauncher {
 public:
  explicit FetchThread(ConfigSource& source) : source_(source) {}
  ~FetchThread() override;  // cancels a running fetch and joins
  void launch(std::function<void(FetchResult)> done) override;  // queued until start()
  // Stops the running fetch through its own stop token (its backoff sleeps, and curl through
  // the progress callback); launches still queued are answered as cancelled.
  void cancel() override;
  void start();
  void stop();

 private:
  void loop(std::stop_token stop);

  ConfigSource& source_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  // Launches, numbered 1, 2, ...; those up to cancelled_through_ are cancelled.
  std::deque<std::pair<std::uint64_t, std::function<void(FetchResult)>>> queue_;  // guarded by mu_
  std::uint64_t launched_ = 0;                      // guarded by mu_
  std::uint64_t cancelled_through_ = 0;             // guarded by mu_
  std::stop_source running_{std::nostopstate};      // guarded by mu_: the running fetch's
  std::jthread thread_;
};

class Ticker {
 public:
  explicit Ticker(ConfigService& service) : service_(service) {}
  ~Ticker();  // stops and joins
  void wake();
  void start();
  void stop();

 private:
  void loop(std::stop_token stop);

  ConfigService& service_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool woken_ = false;  // guarded by mu_
  std::jthread thread_;
};

}  // namespace irsafs
