#include "app/endpoint.h"

namespace irsafs {

EndpointComponent::EndpointComponent(ConfigService& service, HttpServerOptions options)
    : service_(service), server_(*this, std::move(options)) {}

void EndpointComponent::prepare() { server_.bind(); }

void EndpointComponent::start() {
  server_.start();
  live_.store(true);
}

void EndpointComponent::stop() {
  live_.store(false);
  server_.stop();
}

nlohmann::ordered_json EndpointComponent::status() { return service_.status(); }

bool EndpointComponent::live() { return live_.load(); }

void EndpointComponent::refresh(std::function<void(RefreshOutcome)> done) {
  service_.refresh([done = std::move(done)](const RefreshResult& r) { done(to_http(r)); });
}

RefreshOutcome EndpointComponent::to_http(const RefreshResult& r) {
  using Kind = RefreshResult::Kind;
  nlohmann::ordered_json body;
  RefreshOutcome out;
  switch (r.kind) {
    case Kind::kOk:
      out.http_status = 200;
      body["version"] = r.version;
      body["changed"] = r.changed;
      body["bytes"] = r.bytes;
      body["sha256"] = r.sha256;
      break;
    case Kind::kConflict: out.http_status = 409; break;
    case Kind::kShuttingDown: out.http_status = 503; break;
    case Kind::kFailed: out.http_status = 502; break;
  }
  if (r.kind != Kind::kOk) {
    body["error"] = to_string(r.kind);
    body["reason"] = r.why;
    // What readers keep getting meanwhile.
    body["version"] = r.version;
    body["sha256"] = r.sha256.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.sha256);
  }
  out.body = body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  return out;
}

}  // namespace irsafs
