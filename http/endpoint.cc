// The :6003 endpoints (http/server.h) as routes over an EndpointBackend.
#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

#include "http/endpoint.h"
#include "http/metrics.h"
#include "http/server.h"

namespace irsafs {
namespace {

constexpr std::string_view kText = "text/plain; charset=utf-8";
constexpr std::string_view kJson = "application/json";

// A reason for one line of an answer: no control bytes, bounded.
std::string one_line(std::string_view s, std::size_t max = 300) {
  std::string out;
  for (const char c : s.substr(0, max)) out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? ' ' : c;
  if (s.size() > max) out += "...";
  return out;
}

HttpReply text(int status, std::string body) { return HttpReply{status, std::move(body), std::string(kText), {}}; }

}  // namespace

std::vector<HttpRoute> endpoint_routes(EndpointBackend& backend) {
  const std::vector<std::string> get{"GET", "HEAD"};
  std::vector<HttpRoute> routes;
  routes.push_back({"/healthz", get, [&backend](const HttpCall&, HttpRespond respond) {
                      respond(backend.live() ? text(200, "ok\n") : text(503, "not live: the mount is not up\n"));
                    }});
  routes.push_back({"/readyz", get, [&backend](const HttpCall&, HttpRespond respond) {
                      const nlohmann::ordered_json status = backend.status();
                      const auto state = status.contains("state") && status["state"].is_string()
                                             ? status["state"].get<std::string>()
                                             : std::string("unknown");
                      if (state == "ready") return respond(text(200, "ready\n"));
                      std::string why = "not ready: state " + one_line(state, 40);
                      if (status.contains("last_error") && status["last_error"].is_string()) {
                        why += "; last error: " + one_line(status["last_error"].get<std::string>());
                      }
                      respond(text(503, why + "\n"));
                    }});
  // Not HEAD: a HEAD must not start a fetch.
  routes.push_back({"/refresh", {"GET", "POST"}, [&backend](const HttpCall&, HttpRespond respond) {
                      backend.refresh([respond = std::move(respond)](RefreshOutcome o) {
                        respond(HttpReply{o.http_status, std::move(o.body),
                                          o.content_type.empty() ? std::string(kText) : std::move(o.content_type),
                                          {}});
                      });
                    }});
  routes.push_back({"/status", get, [&backend](const HttpCall&, HttpRespond respond) {
                      // As FuseFs renders .status; `replace` keeps a stray invalid byte from
                      // failing the answer.
                      respond(HttpReply{
                          200,
                          backend.status().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                          std::string(kJson),
                          {}});
                    }});
  routes.push_back({"/metrics", get, [&backend](const HttpCall&, HttpRespond respond) {
                      respond(HttpReply{200, render_metrics(backend.status()), std::string(kMetricsContentType), {}});
                    }});
  return routes;
}

}  // namespace irsafs
