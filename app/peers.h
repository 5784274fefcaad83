// Serving peers (issue 14): `irsafs mount --serve-peers ADDR:PORT` answers `GET /v1/config` to
// the other pods of its Ray cluster, so that the cluster calls irsa-svc once (through this
// mount's ConfigService: the same single flight as local readers) instead of once per pod.
//
//   GET /v1/config   Authorization: Bearer <the worker's projected token>
//     401/403/503    the Authenticator's verdict, with its reason; decided before any content
//     200            the current content, text/plain, ETag "<sha256>"
//     304            If-None-Match names the current ETag (a worker's refresh, nothing changed)
//     503            no content: the last fetch failed (Retry-After: the hold-off's remaining
//                    seconds, at least 1, and the reason), or the mount shuts down
//   A request that arrives before the content is known starts the fetch (or joins the one
//   running) and is suspended until it ends, at most --deadline. Any other path 404, another
//   method 405, a request body 413 (http/server.h).
//
// The fetch side (a worker's --peer) is fetcher/peer_source.h; docs/peers.md tells the story.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "auth/authenticator.h"
#include "core/config_service.h"
#include "core/daemon.h"
#include "http/server.h"

namespace irsafs {

// The route's logic over a ConfigService and an Authenticator: no sockets, so unit tests call
// handle() with a fake request.
class PeerEndpoint {
 public:
  PeerEndpoint(ConfigService& service, Authenticator& auth) : service_(service), auth_(auth) {}

  // GET /v1/config (HttpRoute::handle): on the server's thread, never waits.
  void handle(const HttpCall& call, HttpRespond respond);
  HttpRoute route();

  // {"requests": n, "answers": {"200": n, "304": n, "401": n, "403": n, "503": n, "other": n}}
  nlohmann::ordered_json counters() const;

  // The answer with `content` to a request that sent `if_none_match` (empty: none).
  static HttpReply content_reply(const Content& content, std::string_view if_none_match);

 private:
  void serve(std::string if_none_match, HttpRespond respond);
  HttpRespond counted(HttpRespond respond);

  ConfigService& service_;
  Authenticator& auth_;
  std::atomic<WaiterId> next_waiter_{kPeerWaiterIds};
  std::atomic<std::uint64_t> requests_{0};
  // 200, 304, 401, 403, 503, other
  std::array<std::atomic<std::uint64_t>, 6> answers_{};
};

// `--serve-peers`: the endpoint's server as a Daemon component (bound before daemonizing,
// serving after, stopped before the service shuts down); .status gains "peers".
class PeersComponent final : public Component {
 public:
  // `auth` must outlive the component; start() and stop() do not start or stop it.
  PeersComponent(ConfigService& service, Authenticator& auth, HttpServerOptions options);
  ~PeersComponent() override;

  void prepare() override;  // binds: a taken port fails the mount (exit 1, one line)
  void start() override;
  void stop() override;

  PeerEndpoint& endpoint() { return endpoint_; }
  std::string address() const { return server_.address(); }

 private:
  ConfigService& service_;
  PeerEndpoint endpoint_;
  HttpServer server_;
};

}  // namespace irsafs
