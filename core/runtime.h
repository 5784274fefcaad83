// The threads that drive a ConfigService in the daemon:
//  - FetchThread runs fetches (at most one at a time, as the service asks) and reports back;
//  - Ticker sleeps until the service's next deadline and calls tick().
// See docs/THREADING.md.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "core/config_service.h"
#include "fetcher/fetcher.h"

namespace irsafs {

class FetchThread final : public FetchLauncher {
 public:
  explicit FetchThread(Fetcher& fetcher) : fetcher_(fetcher) {}
  ~FetchThread() override;  // cancels a running fetch and joins
  void launch(std::function<void(FetchResult)> done) override;  // queued until start()
  void start();
  void stop();

 private:
  void loop(std::stop_token stop);

  Fetcher& fetcher_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<std::function<void(FetchResult)>> queue_;  // guarded by mu_
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
