#include "core/daemon.h"

namespace irsafs {
namespace {

std::unique_ptr<ConfigSource> make_source(const DaemonSettings& s, Transport& transport, Clock& clock,
                                          Random& random) {
  if (s.source) return s.source(SourceContext{s.fetch, transport, clock, random});
  return std::make_unique<Fetcher>(s.fetch, transport, clock, random);
}

}  // namespace

ServiceOptions Daemon::service_options(const DaemonSettings& settings) {
  ServiceOptions so = settings.service;
  so.read_deadline = settings.fetch.deadline;
  return so;
}

Daemon::Daemon(DaemonSettings settings, std::unique_ptr<Transport> transport, Clock* clock, Random* random)
    : settings_(std::move(settings)),
      transport_(std::move(transport)),
      own_clock_(clock ? nullptr : std::make_unique<SystemClock>()),
      own_random_(random ? nullptr : std::make_unique<SystemRandom>()),
      clock_(clock ? *clock : *own_clock_),
      random_(random ? *random : *own_random_),
      source_(make_source(settings_, *transport_, clock_, random_)),
      fetch_thread_(*source_),
      service_(service_options(settings_), fetch_thread_, clock_, random_),
      ticker_(service_) {
  service_.set_wake_hook([this] { ticker_.wake(); });
}

Daemon::~Daemon() { stop(); }

void Daemon::add(std::unique_ptr<Component> component) { components_.push_back(std::move(component)); }

void Daemon::prepare() {
  for (auto& c : components_) c->prepare();
}

void Daemon::start() {
  if (started_) return;
  started_ = true;
  fetch_thread_.start();
  ticker_.start();
  for (; started_components_ < components_.size(); ++started_components_) components_[started_components_]->start();
}

void Daemon::stop() {
  if (stopped_) return;
  stopped_ = true;
  // Components first (no new requests), then the service answers every waiter, then the
  // threads that drive it; a running fetch is cancelled through its stop token.
  while (started_components_ > 0) components_[--started_components_]->stop();
  service_.shutdown();
  ticker_.stop();
  fetch_thread_.stop();
}

}  // namespace irsafs
