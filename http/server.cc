#include "http/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>


namespace irsafs {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Descriptors left for the rest of the daemon (FUSE, curl, logs, MHD's epoll and eventfd)
// when the connection limit is fitted under RLIMIT_NOFILE.
constexpr rlim_t kFdReserve = 256;

constexpr std::string_view kText = "text/plain; charset=utf-8";

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

struct ResponseDeleter {
  void operator()(MHD_Response* r) const { MHD_destroy_response(r); }
};
using ResponsePtr = std::unique_ptr<MHD_Response, ResponseDeleter>;

struct DaemonDeleter {
  void operator()(MHD_Daemon* d) const { MHD_stop_daemon(d); }
};
using DaemonPtr = std::unique_ptr<MHD_Daemon, DaemonDeleter>;

// One request waiting for its answer. The first answer wins (the handler's, or the 503 of
// stop()). `connection` is touched only while `suspended`: MHD neither times out nor frees a
// suspended connection, and after the resume nobody uses the pointer again.
struct PendingCall {
  explicit PendingCall(MHD_Connection* c) : connection(c) {}

  void settle(HttpReply r) {
    std::lock_guard lock(mu);
    if (reply) return;
    reply = std::move(r);
    if (suspended) {
      suspended = false;
      // Thread-safe (MHD_ALLOW_SUSPEND_RESUME): marks the connection and wakes MHD's thread
      // through its eventfd, which calls the handler again to send the answer.
      MHD_resume_connection(connection);
    }
  }

  std::mutex mu;
  MHD_Connection* const connection;
  bool suspended = false;           // guarded by mu
  std::optional<HttpReply> reply;   // guarded by mu
};

// MHD's per-request pointer (req_cls): created at the first call for a request, deleted when
// MHD reports the request complete.
struct RequestContext {
  std::shared_ptr<PendingCall> call;
};

// The request as a handler sees it, on MHD's thread during the handler's call.
class MhdCall final : public HttpCall {
 public:
  MhdCall(MHD_Connection* c, std::string_view method, std::string_view path) : c_(c), method_(method), path_(path) {}
  std::string_view method() const override { return method_; }
  std::string_view path() const override { return path_; }
  std::string client() const override {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(c_, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr) return "?";
    char host[INET6_ADDRSTRLEN] = "?";
    if (info->client_addr->sa_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(info->client_addr);
      ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
    }
    if (info->client_addr->sa_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(info->client_addr);
      ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
    }
    return "?";
  }
  std::optional<std::string_view> header(const char* name) const override {
    const char* v = MHD_lookup_connection_value(c_, MHD_HEADER_KIND, name);
    if (!v) return std::nullopt;
    return std::string_view(v);
  }

 private:
  MHD_Connection* c_;
  std::string_view method_;
  std::string_view path_;
};

// A reason for one line of an answer: no control bytes, bounded.
std::string one_line(std::string_view s, std::size_t max = 300) {
  std::string out;
  for (const char c : s.substr(0, max)) out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? ' ' : c;
  if (s.size() > max) out += "...";
  return out;
}

std::string format_duration(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}

MHD_Result reply(MHD_Connection* c, const HttpReply& o) {
  const unsigned status = o.status >= 100 && o.status <= 599 ? static_cast<unsigned>(o.status) : 500;
  // A 304 has no body (RFC 9110 15.4.5).
  const std::string_view body = status == MHD_HTTP_NOT_MODIFIED ? std::string_view() : std::string_view(o.body);
  ResponsePtr r(MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY));
  if (!r) return MHD_NO;  // out of memory: MHD closes the connection
  const std::string content_type = o.content_type.empty() ? std::string(kText) : o.content_type;
  MHD_add_response_header(r.get(), MHD_HTTP_HEADER_CONTENT_TYPE, content_type.c_str());
  MHD_add_response_header(r.get(), MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(r.get(), "X-Content-Type-Options", "nosniff");
  for (const auto& [name, value] : o.headers) MHD_add_response_header(r.get(), name.c_str(), value.c_str());
  // MHD holds its own reference until the answer is sent; ours is dropped here.
  return MHD_queue_response(c, status, r.get());
}

MHD_Result reply(MHD_Connection* c, unsigned status, std::string_view body, std::string_view type) {
  return reply(c, HttpReply{static_cast<int>(status), std::string(body), std::string(type), {}});
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

bool same_socket(int fd, const struct stat& before) {
  struct stat now {};
  return ::fstat(fd, &now) == 0 && now.st_dev == before.st_dev && now.st_ino == before.st_ino;
}

}  // namespace

struct HttpServer::Impl {
  Impl(std::vector<HttpRoute> r, HttpServerOptions o, std::string n)
      : routes(std::move(r)), options(std::move(o)), name(std::move(n)) {}

  static MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method,
                               const char* version, const char* upload_data, std::size_t* upload_size,
                               void** req_cls);
  static void on_completed(void* cls, MHD_Connection* c, void** req_cls, MHD_RequestTerminationCode toe);
  static void on_connection(void* cls, MHD_Connection* c, void** socket_context, MHD_ConnectionNotificationCode code);
  static void on_log(void* cls, const char* fmt, va_list ap);

  MHD_Result handle(MHD_Connection* c, std::string_view url, std::string_view method, RequestContext& ctx);
  MHD_Result dispatch(MHD_Connection* c, const HttpRoute& route, std::string_view url, std::string_view method,
                      RequestContext& ctx);
  void reap(std::stop_token stop);

  const std::vector<HttpRoute> routes;
  const HttpServerOptions options;
  const std::string name;
  DaemonPtr daemon;
  UniqueFd bound;  // bind() done, start() not yet
  std::uint16_t port = 0;
  unsigned limit = 0;

  std::mutex mu;
  std::condition_variable cv;                                 // pending became empty
  bool stopping = false;                                      // guarded by mu
  std::unordered_set<std::shared_ptr<PendingCall>> pending;   // guarded by mu: until answered

  // The slow-client reaper: MHD's own timeout is an idle timeout, reset by every byte, so a
  // client trickling its request head would hold a connection forever. Every connection is
  // tracked from MHD's "started" to its "closed" notification; one whose request head is not
  // complete request_timeout after it connected (or after its previous answer) is shut down.
  struct Tracked {
    int fd = -1;
    SteadyClock::time_point since;
    bool in_request = false;  // the head arrived: the request is being answered (or suspended)
    bool dropped = false;
  };
  std::mutex conn_mu;
  std::condition_variable_any conn_cv;
  std::unordered_map<MHD_Connection*, Tracked> connections;  // guarded by conn_mu
  std::atomic<std::uint64_t> dropped{0};
  std::jthread reaper;
};

MHD_Result HttpServer::Impl::on_request(void* cls, MHD_Connection* c, const char* url, const char* method,
                                        const char* /*version*/, const char* /*upload_data*/,
                                        std::size_t* upload_size, void** req_cls) {
  auto* self = static_cast<Impl*>(cls);
  // Nothing may unwind into C: an exception becomes a 500 (and a log line without request data).
  try {
    auto* ctx = static_cast<RequestContext*>(*req_cls);
    if (!ctx) {
      // First call: the request head is complete.
      ctx = new RequestContext;
      *req_cls = ctx;
      {
        std::lock_guard lock(self->conn_mu);
        if (auto it = self->connections.find(c); it != self->connections.end()) it->second.in_request = true;
      }
      // No endpoint takes a body: refuse one announced before reading it (MHD then closes the
      // connection instead of reading what follows).
      const char* length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      const char* chunked = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
      if (chunked || (length && std::strcmp(length, "0") != 0)) {
        return reply(c, MHD_HTTP_CONTENT_TOO_LARGE, "no endpoint takes a request body\n", kText);
      }
      return MHD_YES;  // the final call (no body) comes next
    }
    if (*upload_size != 0) {
      // Cannot happen after the check above; drop the bytes rather than trust them.
      *upload_size = 0;
      return MHD_YES;
    }
    return self->handle(c, url ? url : "", method ? method : "", *ctx);
  } catch (const std::exception& e) {
    spdlog::error("Cannot answer an HTTP request: {}", one_line(e.what()));
  } catch (...) {
    spdlog::error("Cannot answer an HTTP request: unknown exception");
  }
  return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n", kText);
}

MHD_Result HttpServer::Impl::handle(MHD_Connection* c, std::string_view url, std::string_view method,
                                    RequestContext& ctx) {
  if (ctx.call) {
    // Called again after the resume: the answer is there (settle() sets it before resuming).
    HttpReply answer;
    {
      std::lock_guard lock(ctx.call->mu);
      answer = ctx.call->reply.value_or(HttpReply{500, "internal error\n", std::string(kText), {}});
    }
    return reply(c, answer);
  }
  for (const HttpRoute& route : routes) {
    if (route.path != url) continue;
    if (std::find(route.methods.begin(), route.methods.end(), method) == route.methods.end()) {
      return reply(c, HttpReply{MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", std::string(kText),
                                {{MHD_HTTP_HEADER_ALLOW, join(route.methods)}}});
    }
    return dispatch(c, route, url, method, ctx);
  }
  return reply(c, MHD_HTTP_NOT_FOUND, "not found\n", kText);
}

MHD_Result HttpServer::Impl::dispatch(MHD_Connection* c, const HttpRoute& route, std::string_view url,
                                      std::string_view method, RequestContext& ctx) {
  auto call = std::make_shared<PendingCall>(c);
  {
    std::lock_guard lock(mu);
    if (stopping) return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down\n", kText);
    pending.insert(call);
  }
  ctx.call = call;
  try {
    // The callback holds the call, never the server: an answer arriving after stop() finds
    // the call settled and does nothing.
    const MhdCall request(c, method, url);
    route.handle(request, [call](HttpReply r) { call->settle(std::move(r)); });
  } catch (const std::exception& e) {
    spdlog::error("Cannot answer an HTTP request for {}: {}", route.path, one_line(e.what()));
    call->settle(HttpReply{500, "internal error\n", std::string(kText), {}});
  }
  std::unique_lock lock(call->mu);
  if (call->reply) {
    // Settled already (inside the handler, or by stop()): answer now, no suspension.
    HttpReply answer = *call->reply;
    lock.unlock();
    return reply(c, answer);
  }
  // Parked: MHD's thread goes on with other connections; settle() resumes this one. Suspended
  // under call->mu so that settle() cannot resume it before it is suspended.
  call->suspended = true;
  MHD_suspend_connection(c);
  return MHD_YES;
}

void HttpServer::Impl::on_completed(void* cls, MHD_Connection* c, void** req_cls, MHD_RequestTerminationCode) {
  auto* self = static_cast<Impl*>(cls);
  std::unique_ptr<RequestContext> ctx(static_cast<RequestContext*>(*req_cls));
  *req_cls = nullptr;
  {
    std::lock_guard lock(self->conn_mu);
    if (auto it = self->connections.find(c); it != self->connections.end()) {
      it->second.in_request = false;  // the next request on this connection has its own deadline
      it->second.since = SteadyClock::now();
    }
  }
  if (ctx && ctx->call) {
    std::lock_guard lock(self->mu);
    self->pending.erase(ctx->call);
    if (self->pending.empty()) self->cv.notify_all();
  }
}

void HttpServer::Impl::on_connection(void* cls, MHD_Connection* c, void**, MHD_ConnectionNotificationCode code) {
  auto* self = static_cast<Impl*>(cls);
  std::lock_guard lock(self->conn_mu);
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info) self->connections[c] = Tracked{info->connect_fd, SteadyClock::now()};
  } else {
    // MHD reports "closed" before it closes the descriptor: once this returns, the reaper no
    // longer knows the descriptor, so it never shuts down a number reused by someone else.
    self->connections.erase(c);
  }
}

void HttpServer::Impl::reap(std::stop_token stop) {
  const auto period = std::clamp<std::chrono::milliseconds>(options.request_timeout / 4, std::chrono::milliseconds(50),
                                                            std::chrono::milliseconds(1000));
  std::unique_lock lock(conn_mu);
  while (!stop.stop_requested()) {
    conn_cv.wait_for(lock, stop, period, [] { return false; });
    const auto now = SteadyClock::now();
    unsigned count = 0;
    for (auto& [c, t] : connections) {
      if (t.in_request || t.dropped || now - t.since < options.request_timeout) continue;
      // shutdown(), not close(): the descriptor stays MHD's, which sees the end of the stream
      // and closes the connection itself.
      ::shutdown(t.fd, SHUT_RDWR);
      t.dropped = true;
      ++count;
    }
    if (count > 0) {
      dropped += count;
      spdlog::info("Dropped {} HTTP connection(s) that sent no complete request within {}", count,
                   format_duration(options.request_timeout));
    }
  }
}

void HttpServer::Impl::on_log(void*, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string_view msg(buf);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.remove_suffix(1);
  // MHD's messages about limits matter to an operator; the rest (a client that went away, a
  // malformed request) are routine on an open port, and some name the request's URL: debug.
  const bool limit = msg.find("limit") != std::string_view::npos;
  spdlog::log(limit ? spdlog::level::warn : spdlog::level::debug, "HTTP server: {}", one_line(msg));
}

HttpServer::HttpServer(EndpointBackend& backend, HttpServerOptions options)
    : HttpServer(endpoint_routes(backend), std::move(options)) {}

HttpServer::HttpServer(std::vector<HttpRoute> routes, HttpServerOptions options, std::string name)
    : impl_(std::make_unique<Impl>(std::move(routes), std::move(options), std::move(name))) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::bind() {
  Impl& s = *impl_;
  if (s.daemon || s.bound.get() >= 0) throw HttpServerError("Cannot bind the HTTP server: it is bound already");
  const HttpServerOptions& o = s.options;
  const std::string where = o.address.to_string();

  // Every connection is a descriptor: fit the limit under RLIMIT_NOFILE, raising it if allowed.
  s.limit = std::max(1u, o.connection_limit);
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const rlim_t want = static_cast<rlim_t>(s.limit) + kFdReserve;
    if (rl.rlim_cur < want && o.raise_fd_limit) {
      rlimit raised = rl;
      raised.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
      if (raised.rlim_cur > rl.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        spdlog::debug("Raised the open file limit from {} to {} for {} HTTP connections", rl.rlim_cur,
                      raised.rlim_cur, s.limit);
        rl = raised;
      }
    }
    if (rl.rlim_cur < want) {
      const rlim_t fits =
          rl.rlim_cur > 2 * kFdReserve ? rl.rlim_cur - kFdReserve : std::max<rlim_t>(rl.rlim_cur / 2, 1);
      spdlog::warn("The open file limit ({}, hard {}) leaves room for {} HTTP connections instead of {}: more "
                   "clients wait in the listen backlog until a connection closes (raise it: ulimit -n, "
                   "LimitNOFILE)",
                   rl.rlim_cur, rl.rlim_max == RLIM_INFINITY ? std::string("unlimited") : std::to_string(rl.rlim_max),
                   fits, s.limit);
      s.limit = static_cast<unsigned>(fits);
    }
  }

  // Our own socket rather than MHD's, for the error message (the address and errno; MHD would
  // only say it failed) and to control the options: SO_REUSEADDR so a restarted daemon rebinds
  // while the old one's connections sit in TIME_WAIT; never SO_REUSEPORT, so a port held by
  // anyone — another irsafs included — fails here instead of being silently shared.
  const bool v6 = o.address.ipv6();
  UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) throw HttpServerError("Cannot listen on " + where + ": " + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    // [::] means IPv6 only; whoever wants IPv4 asks for it.
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(o.address.port);
    if (::inet_pton(AF_INET6, o.address.ip.c_str(), &a->sin6_addr) != 1) {
      throw HttpServerError("Cannot listen on " + where + ": not an IPv6 address");
    }
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(o.address.port);
    if (::inet_pton(AF_INET, o.address.ip.c_str(), &a->sin_addr) != 1) {
      throw HttpServerError("Cannot listen on " + where + ": not an IPv4 address");
    }
    len = sizeof(sockaddr_in);
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd.get(), SOMAXCONN) != 0) {
    throw HttpServerError("Cannot listen on " + where + ": " + std::strerror(errno));
  }
  socklen_t got = sizeof ss;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &got) != 0) {
    throw HttpServerError("Cannot listen on " + where + ": " + std::strerror(errno));
  }
  s.port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  s.bound = std::move(fd);
}

void HttpServer::start() {
  Impl& s = *impl_;
  if (s.daemon) throw HttpServerError("Cannot start the HTTP server: it runs already");
  if (s.bound.get() < 0) bind();
  const HttpServerOptions& o = s.options;
  const std::string where = o.address.to_string();
  const bool v6 = o.address.ipv6();
  UniqueFd fd = std::move(s.bound);
  struct stat socket_id {};
  ::fstat(fd.get(), &socket_id);

  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (v6) flags |= MHD_USE_IPv6;
  const unsigned idle = static_cast<unsigned>(std::max<std::chrono::seconds::rep>(1, o.idle_timeout.count()));
  MHD_Daemon* d = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &Impl::on_request, &s,
      // The logger first, so that MHD's start-up messages reach it too.
      MHD_OPTION_EXTERNAL_LOGGER, &Impl::on_log, &s,
      MHD_OPTION_LISTEN_SOCKET, fd.get(),
      MHD_OPTION_CONNECTION_LIMIT, s.limit,
      MHD_OPTION_CONNECTION_TIMEOUT, idle,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, o.connection_memory,
      MHD_OPTION_NOTIFY_COMPLETED, &Impl::on_completed, &s,
      MHD_OPTION_NOTIFY_CONNECTION, &Impl::on_connection, &s,
      MHD_OPTION_END);
  if (!d) {
    // MHD closes the socket it was given on some failure paths and not on others: close it
    // only if the descriptor still is our socket.
    const int raw = fd.release();
    if (same_socket(raw, socket_id)) ::close(raw);
    throw HttpServerError("Cannot start the HTTP server on " + where + ": libmicrohttpd refused to start");
  }
  fd.release();  // MHD's now: MHD_stop_daemon closes it
  s.daemon.reset(d);
  {
    std::lock_guard lock(s.mu);
    s.stopping = false;
  }
  s.reaper = std::jthread([&s](std::stop_token stop) { s.reap(stop); });
  std::string paths;
  for (const HttpRoute& r : s.routes) paths += (paths.empty() ? "" : " ") + r.path;
  spdlog::info("{} on http://{} ({})", s.name, address(), paths);
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (!s.daemon) return;
  std::vector<std::shared_ptr<PendingCall>> calls;
  {
    std::lock_guard lock(s.mu);
    s.stopping = true;  // a request arriving from now on is answered 503 at once
    calls.assign(s.pending.begin(), s.pending.end());
  }
  // MHD_stop_daemon must not find a suspended connection (it aborts): answer them all first.
  for (const auto& call : calls) call->settle(HttpReply{503, "shutting down\n", std::string(kText), {}});
  {
    std::unique_lock lock(s.mu);
    if (!s.cv.wait_for(lock, s.options.stop_grace, [&] { return s.pending.empty(); })) {
      spdlog::warn("Stopping the {} with {} answer(s) not yet delivered", s.name, s.pending.size());
    }
  }
  s.reaper = std::jthread();  // stops and joins
  s.daemon.reset();           // closes every connection and the listening socket
  {
    std::lock_guard lock(s.mu);
    s.pending.clear();
  }
  std::lock_guard lock(s.conn_mu);
  s.connections.clear();
}

std::uint16_t HttpServer::port() const { return impl_->port; }

std::string HttpServer::address() const {
  ListenAddress a = impl_->options.address;
  a.port = impl_->port;
  return a.to_string();
}

unsigned HttpServer::connection_limit() const { return impl_->limit; }

std::uint64_t HttpServer::dropped_slow_clients() const { return impl_->dropped.load(); }

}  // namespace irsafs
