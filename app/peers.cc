#include "app/peers.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <string_view>

#include "common/text.h"
#include "fetcher/peer_source.h"
#include "http/conditional.h"

namespace irsafs {
namespace {

constexpr std::string_view kText = "text/plain; charset=utf-8";

HttpReply text(int status, std::string body) {
  return HttpReply{status, std::move(body), std::string(kText), {}};
}

// Retry-After in whole seconds, at least 1: "0" would invite a retry storm.
std::string retry_after(std::optional<Duration> remaining) {
  const double s = remaining ? std::chrono::duration<double>(*remaining).count() : 1.0;
  return std::to_string(std::max<long long>(1, static_cast<long long>(std::ceil(s))));
}

HttpReply unavailable(const std::string& why, std::optional<Duration> remaining) {
  HttpReply r = text(503, printable(why, 380) + "\n");
  r.headers.emplace_back("Retry-After", retry_after(remaining));
  return r;
}

std::size_t answer_slot(int status) {
  switch (status) {
    case 200: return 0;
    case 304: return 1;
    case 401: return 2;
    case 403: return 3;
    case 503: return 4;
    default: return 5;
  }
}

}  // namespace

HttpReply PeerEndpoint::content_reply(const Content& content, std::string_view if_none_match) {
  HttpReply r;
  r.headers.emplace_back("ETag", "\"" + content.sha256 + "\"");
  if (!if_none_match.empty() && if_none_match_matches(if_none_match, content.sha256)) {
    r.status = 304;
    return r;
  }
  r.status = 200;
  r.body = content.bytes;
  r.content_type = std::string(kText);
  return r;
}

HttpRespond PeerEndpoint::counted(HttpRespond respond) {
  return [this, respond = std::move(respond)](HttpReply r) {
    answers_[answer_slot(r.status)].fetch_add(1, std::memory_order_relaxed);
    respond(std::move(r));
  };
}

void PeerEndpoint::handle(const HttpCall& call, HttpRespond respond_raw) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  HttpRespond respond = counted(std::move(respond_raw));
  // What the answer needs from the request is copied now: the call is gone when the
  // authenticator answers later.
  std::string if_none_match(call.header("If-None-Match").value_or(""));
  std::string client = call.client();
  const std::string_view authorization = call.header("Authorization").value_or("");
  auth_.check(authorization, [this, respond = std::move(respond), if_none_match = std::move(if_none_match),
                              client = std::move(client)](AuthResult verdict) mutable {
    if (!verdict.ok()) {
      // The authenticator logged which check failed; this says who asked.
      spdlog::debug("Refused GET /v1/config from {}: {} {}", client, verdict.status, printable(verdict.why, 200));
      const int status = verdict.status == 403 || verdict.status == 503 ? verdict.status : 401;
      HttpReply r = text(status, printable(verdict.why.empty() ? "not authorized" : verdict.why, 300) + "\n");
      if (status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"irsafs\"");
      // Keys that cannot be had now: come back a little later rather than at once.
      if (status == 503) r.headers.emplace_back("Retry-After", "2");
      respond(std::move(r));
      return;
    }
    serve(std::move(if_none_match), std::move(respond));
  });
}

void PeerEndpoint::serve(std::string if_none_match, HttpRespond respond) {
  if (ContentPtr now = service_.current()) return respond(content_reply(*now, if_none_match));
  // The last fetch failed and its hold-off runs: no fetch starts before it ends, so the worker
  // is told when to come back instead of being held.
  if (auto hold = service_.hold_off()) {
    return respond(unavailable("the serving peer cannot fetch the config: " + hold->why, hold->remaining));
  }
  const WaiterId id = next_waiter_.fetch_add(1, std::memory_order_relaxed);
  // The waiter holds the answer's callback; it is called once (a waiter is never taken back
  // here: an HTTP client that went away costs a parked waiter until the fetch ends).
  auto reply = [this, if_none_match, respond](const ReadOutcome& o) {
    if (o.content) return respond(content_reply(*o.content, if_none_match));
    const auto hold = service_.hold_off();
    std::string_view why = o.why;
    if (why.starts_with("fetch failed: ")) why.remove_prefix(14);
    respond(unavailable("the serving peer cannot fetch the config: " + std::string(why),
                        hold ? std::optional<Duration>(hold->remaining) : std::nullopt));
  };
  if (auto at_once = service_.read(id, reply)) reply(*at_once);
}

HttpRoute PeerEndpoint::route() {
  return HttpRoute{kPeerConfigPath, {"GET"}, [this](const HttpCall& call, HttpRespond respond) {
                     handle(call, std::move(respond));
                   }};
}

nlohmann::ordered_json PeerEndpoint::counters() const {
  nlohmann::ordered_json answers;
  const char* names[] = {"200", "304", "401", "403", "503", "other"};
  for (std::size_t i = 0; i < answers_.size(); ++i) answers[names[i]] = answers_[i].load(std::memory_order_relaxed);
  return {{"requests", requests_.load(std::memory_order_relaxed)}, {"answers", answers}};
}

PeersComponent::PeersComponent(ConfigService& service, Authenticator& auth, HttpServerOptions options)
    : service_(service),
      endpoint_(service, auth),
      server_(std::vector<HttpRoute>{endpoint_.route()}, std::move(options), "Peer endpoint") {}

PeersComponent::~PeersComponent() { stop(); }

void PeersComponent::prepare() { server_.bind(); }

void PeersComponent::start() {
  server_.start();
  service_.set_status_extras("peers", [this](nlohmann::ordered_json& j) {
    nlohmann::ordered_json p = endpoint_.counters();
    p["serving"] = server_.address();
    j["peers"] = std::move(p);
  });
}

void PeersComponent::stop() {
  service_.set_status_extras("peers", {});
  server_.stop();
}

}  // namespace irsafs
