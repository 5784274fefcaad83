// The HTTP endpoints of `irsafs mount` (http/server.h) as a Daemon component: the backend that
// answers them from the ConfigService, and the server's lifecycle (bound before daemonizing,
// serving after, stopped before the service shuts down).
#pragma once

#include <atomic>
#include <memory>

#include "core/daemon.h"
#include "http/endpoint.h"
#include "http/server.h"

namespace irsafs {

class EndpointComponent final : public Component, public EndpointBackend {
 public:
  EndpointComponent(ConfigService& service, HttpServerOptions options);

  // Component
  void prepare() override;  // binds: a taken port fails the mount (exit 1, one line)
  void start() override;
  void stop() override;

  // EndpointBackend (on the server's thread; never waits)
  nlohmann::ordered_json status() override;
  bool live() override;
  void refresh(std::function<void(RefreshOutcome)> done) override;

  // The HTTP answer to a refresh: 200 {version, changed, bytes, sha256}; 409 on a seeded
  // mount; 503 when shutting down; 502 when the fetch failed (irsa-svc is the upstream that
  // failed), with the reason.
  static RefreshOutcome to_http(const RefreshResult& r);

 private:
  ConfigService& service_;
  HttpServer server_;
  std::atomic<bool> live_{false};
};

}  // namespace irsafs
