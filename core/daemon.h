// The daemon's engine, wired once: Transport → ConfigSource → FetchThread → ConfigService → Ticker,
// plus the components that plug into it (the HTTP endpoint today; peers and verification
// next). The program builds it with libcurl; tests and benchmarks with a fake Transport. The
// FUSE adapter and the mount lifecycle (fs/) sit on top and know nothing of this wiring.
//
// Lifecycle: construct → prepare() (before the process daemonizes: components claim what can
// fail, e.g. a listening port) → start() (threads: fetch thread, ticker, then components in
// order) → stop() (components in reverse, then the service answers every waiter, then the
// ticker and the fetch thread stop). See docs/THREADING.md.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "common/clock.h"
#include "core/config_service.h"
#include "core/runtime.h"
#include "fetcher/fetcher.h"
#include "fetcher/source.h"
#include "fetcher/transport.h"

namespace irsafs {

// What a source is built from: the daemon's transport, clock and random, which outlive it.
struct SourceContext {
  const FetchSettings& fetch;
  Transport& transport;
  Clock& clock;
  Random& random;
};
using SourceFactory = std::function<std::unique_ptr<ConfigSource>(const SourceContext&)>;

struct DaemonSettings {
  // The fetch's settings. Whatever the source, fetch.deadline bounds a fetch and a reader.
  FetchSettings fetch;
  // Builds the source of fetches; unset: irsa-svc itself (a Fetcher on `fetch`).
  SourceFactory source;
  // The service's tuning (refresh interval, writable, hold-off, write quiet period). Its
  // read_deadline is not taken from here: see service_options().
  ServiceOptions service;
};

// Something with a thread of its own that runs beside the service (the HTTP endpoint, ...).
class Component {
 public:
  virtual ~Component() = default;
  // Before daemonizing, on the main thread: claim resources whose failure must fail the start
  // (throw std::exception with one line saying what and why). No threads here: they would not
  // survive the fork.
  virtual void prepare() {}
  virtual void start() = 0;
  virtual void stop() = 0;  // idempotent; must not wait for the service's threads
};

class Daemon {
 public:
  // `clock` and `random` default to the system's; tests may pass their own.
  Daemon(DaemonSettings settings, std::unique_ptr<Transport> transport, Clock* clock = nullptr,
         Random* random = nullptr);
  ~Daemon();  // stop()
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // The one place deadlines are derived: a reader waits no longer than a fetch may take, so a
  // reader that started a fetch gets that fetch's outcome (ConfigService::covered_by_fetch_locked
  // relies on the two being equal).
  static ServiceOptions service_options(const DaemonSettings& settings);

  ConfigService& service() { return service_; }
  const DaemonSettings& settings() const { return settings_; }

  // Components are prepared, started and stopped with the daemon; add them before prepare().
  void add(std::unique_ptr<Component> component);
  void prepare();
  void start();
  void stop();

 private:
  const DaemonSettings settings_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<Clock> own_clock_;
  std::unique_ptr<Random> own_random_;
  Clock& clock_;
  Random& random_;
  std::unique_ptr<ConfigSource> source_;
  FetchThread fetch_thread_;
  ConfigService service_;
  Ticker ticker_;
  std::vector<std::unique_ptr<Component>> components_;
  std::size_t started_components_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace irsafs
