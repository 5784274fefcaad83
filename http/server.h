// The HTTP servers of `irsafs mount`, on libmicrohttpd: one internal thread polling with epoll,
// no thread per request. A server answers a table of routes (HttpRoute); a route's handler
// answers at once or later, from any thread, while the request is suspended (it costs no
// thread). Two tables exist: the endpoints below (issue 11: the old IRSA sidecar's port,
// probes and metrics; http/endpoint.h) and the peer endpoint GET /v1/config (issue 14,
// app/peers.h).
//
//   GET /healthz          200 "ok" while live(), else 503
//   GET /readyz           200 "ready" when status().state is "ready", else 503 with the state and
//                         the last error on one line
//   GET|POST /refresh     EndpointBackend::refresh(); the request is suspended (it costs no
//                         thread) until the outcome arrives from whichever thread has it
//   GET /status           the .status JSON
//   GET /metrics          Prometheus text 0.0.4 (http/metrics.h)
//   anything else 404; another method 405 with Allow. HEAD works wherever GET does (except
//   /refresh: a HEAD must not start a fetch). A request with a body is refused (413): no
//   endpoint takes one. No answer ever repeats request data.
//
// Every route: a request with a body is refused (413); a request head larger than the
// per-connection memory is refused (431/414).
//
// Bounds: at most connection_limit connections (more wait in the kernel's listen backlog
// until one closes); a request head larger than the per-connection memory is refused
// (431/414); a connection idle for idle_timeout is closed, and one whose request head has not
// fully arrived request_timeout after it connected (or after its previous answer) is dropped,
// so a client that trickles bytes cannot hold a connection either.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/endpoint.h"
#include "http/listen.h"

namespace irsafs {

struct HttpServerOptions {
  ListenAddress address{"127.0.0.1", 0};  // port 0: any free port (tests); see port()
  // 1,000 concurrent /refresh calls, each a suspended connection, must all be answered.
  unsigned connection_limit = 2048;
  std::chrono::seconds idle_timeout{10};
  std::chrono::milliseconds request_timeout{10000};
  // Per connection: the request head and the answer's headers (MHD's memory pool); a larger
  // request head is refused. 16 KiB is ample for curl, probes and Prometheus.
  std::size_t connection_memory = 16 * 1024;
  // stop(): how long answered requests may take to drain before connections are closed.
  std::chrono::milliseconds stop_grace{2000};
  // Raise the soft RLIMIT_NOFILE when it is below what connection_limit needs (see start()).
  bool raise_fd_limit = true;
};

// One answer. The body never repeats request data.
struct HttpReply {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<std::pair<std::string, std::string>> headers;  // beyond Content-Type (ETag, Retry-After, ...)
};
using HttpRespond = std::function<void(HttpReply)>;

// The request a handler sees; valid only during the handler's call (on the server's thread).
class HttpCall {
 public:
  virtual ~HttpCall() = default;
  virtual std::string_view method() const = 0;
  virtual std::string_view path() const = 0;
  // The peer's address ("10.0.0.5:41234"), for log lines.
  virtual std::string client() const = 0;
  // A request header's value (name case-insensitive), nullopt when absent.
  virtual std::optional<std::string_view> header(const char* name) const = 0;
};

struct HttpRoute {
  std::string path;                  // exact; a query string does not change the route
  std::vector<std::string> methods;  // allowed ("GET", "HEAD", "POST"); another gets 405 with Allow
  // Called on the server's one thread: it must not block. `respond` must be called exactly
  // once, from any thread, inside the call (answered at once) or later (the request is
  // suspended until then; stop() answers it 503 "shutting down" first if it comes to that).
  std::function<void(const HttpCall&, HttpRespond)> handle;
};

// The routes of the :6003 endpoints over `backend` (listed above).
std::vector<HttpRoute> endpoint_routes(EndpointBackend& backend);

class HttpServerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class HttpServer {
 public:
  // `backend` must outlive the server (or at least its stop()).
  HttpServer(EndpointBackend& backend, HttpServerOptions options);
  // A server of other routes; `name` says what it serves in its log lines ("HTTP endpoints",
  // "Peer endpoint").
  HttpServer(std::vector<HttpRoute> routes, HttpServerOptions options, std::string name = "HTTP endpoints");
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds (SO_REUSEADDR, never SO_REUSEPORT: a port taken by anyone, even another irsafs, is
  // an error, not a silent second listener) and starts serving. Throws HttpServerError with one
  // line naming the address and the OS error, e.g. "Cannot listen on 127.0.0.1:6003: Address
  // already in use".
  //
  // Each connection takes a file descriptor. When the soft RLIMIT_NOFILE is below
  // connection_limit + a reserve for the rest of the daemon, start() raises it up to the hard
  // limit (nothing in irsafs uses select(), so descriptors above 1024 are fine); if the hard
  // limit is lower still, the connection limit is lowered to fit and a warning says so.
  // Connections beyond the limit are not refused: they wait in the listen backlog (SOMAXCONN,
  // net.core.somaxconn) until a connection closes; beyond the backlog the kernel drops SYNs and
  // clients retry.
  void start();
  // The binding half of start(), for a caller that must learn of a taken port before it forks
  // (irsafs mount binds before daemonizing, so that the parent exits 1 naming the address, and
  // starts serving after: threads do not survive fork). start() then serves on this socket.
  void bind();
  // Stops accepting, answers every suspended request with 503 "shutting down", lets answers
  // drain (at most stop_grace), then closes every connection and the socket. Idempotent;
  // called by the destructor. No request is left hanging.
  void stop();

  std::uint16_t port() const;             // the bound port (after start())
  std::string address() const;            // e.g. "127.0.0.1:6003" (after start())
  unsigned connection_limit() const;      // in effect (after start())
  // Connections dropped because their request head did not arrive within request_timeout.
  std::uint64_t dropped_slow_clients() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace irsafs
