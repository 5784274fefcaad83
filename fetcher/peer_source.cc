#include "fetcher/peer_source.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/sha256.h"
#include "common/text.h"

namespace irsafs {
namespace {

// The head's 503 quotes its own fetch's error (irsa-svc's URL, status and first line).
constexpr std::size_t kPeerReasonBytes = 400;

// A projected service-account token is about 1 KiB; anything far larger is not one.
constexpr std::size_t kMaxTokenBytes = 64 * 1024;

}  // namespace

std::string peer_config_url(std::string_view peer) {
  const auto scheme_end = peer.find("://");
  const std::string_view scheme = scheme_end == std::string_view::npos ? std::string_view() : peer.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    throw std::invalid_argument("The peer URL must start with http:// or https://, not '" + printable(peer, 80) +
                                "'");
  }
  const std::string_view rest = peer.substr(scheme_end + 3);
  const auto path_at = rest.find_first_of("/?#");
  if (rest.empty() || path_at == 0) {
    throw std::invalid_argument("The peer URL names no host: '" + printable(peer, 80) + "'");
  }
  if (invalid_utf8_at(peer) || peer.find_first_of(" \t\r\n") != std::string_view::npos) {
    throw std::invalid_argument("The peer URL holds white space or bytes that are not UTF-8");
  }
  std::string url(peer);
  if (path_at == std::string_view::npos) return url + kPeerConfigPath;
  if (rest.substr(path_at) == "/") return url.substr(0, url.size() - 1) + kPeerConfigPath;
  return url;
}

Secret read_token_file(const std::string& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot read the token file " + path + ": " + std::strerror(errno);
    return {};
  }
  std::string text;
  text.reserve(4096);  // no reallocation (and copy left behind) for a token of usual size
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "cannot read the token file " + path + ": " + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    if (text.size() + static_cast<std::size_t>(n) > kMaxTokenBytes) {
      error = "the token file " + path + " is larger than " + std::to_string(kMaxTokenBytes) + " bytes";
      break;
    }
    if (text.size() + static_cast<std::size_t>(n) > text.capacity()) {
      // Grow by hand so the outgrown buffer is wiped.
      std::string bigger;
      bigger.reserve(std::min(kMaxTokenBytes, text.capacity() * 2));
      bigger.append(text);
      Secret::wipe_string(text);
      text.swap(bigger);
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  explicit_bzero(buf, sizeof buf);
  ::close(fd);
  if (!error.empty()) {
    Secret::wipe_string(text);
    return {};
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' || text.back() == '\t')) {
    text.pop_back();
  }
  if (text.empty()) error = "the token file " + path + " is empty";
  return Secret(std::move(text));
}

Attempt PeerSource::attempt_once(TimePoint deadline, FetchResult& result, std::stop_token stop) {
  using Verdict = Attempt::Verdict;
  const std::string where = "peer " + settings_.url + ": ";

  // A fresh read of the token at every attempt: the kubelet replaces it before it expires.
  std::string token_error;
  Secret token = read_token_file(settings_.token_file, token_error);
  if (!token_error.empty()) return {Verdict::kFail, where + token_error, {}, {}};

  HttpRequest get;
  get.url = settings_.url;
  get.headers = {{"Accept", "text/plain, */*"}};
  if (!last_sha256_.empty()) get.headers.emplace_back("If-None-Match", "\"" + last_sha256_ + "\"");
  get.bearer = &token;
  // The head holds a request while its own fetch runs: the request may last what is left.
  get.timeout = std::max(Duration(std::chrono::milliseconds(1)), deadline - clock_.now());
  ++result.peer_requests;
  HttpResponse response = transport_.perform(get, stop);
  const WipedOnExit wipe_body(response.body);

  if (auto failed = incomplete_response(response, where)) return *failed;
  if (auto config = config_response(response, where)) return *config;
  const std::optional<Duration> retry_after = usable_retry_after(response);
  if (response.status == 304) {
    if (last_sha256_.empty()) return {Verdict::kRetry, where + "HTTP 304 to a request that was not conditional", {}, {}};
    return {Verdict::kSuccess, {}, {}, last_};
  }
  // The head's reasons are irsafs's own one-line messages, which quote irsa-svc's: longer than
  // an arbitrary server's error page is allowed.
  const std::string why = where + describe_status(response.status, response.body, token, kPeerReasonBytes);
  // 401 and 403 are the head's verdict on this pod's token: asking again does not change it.
  if (response.status == 401 || response.status == 403) return {Verdict::kFail, why, {}, {}};
  if (response.status == 404) {
    return {Verdict::kFail, why + " (does the peer run irsafs mount --serve-peers?)", {}, {}};
  }
  if (is_retryable_status(response.status)) return {Verdict::kRetry, why, retry_after, {}};
  return {Verdict::kFail, why, {}, {}};
}

FetchResult PeerSource::fetch(std::stop_token stop) {
  FetchResult result = run_attempts(settings_.retry, settings_.deadline, clock_, random_, stop,
                                    [this](TimePoint deadline, FetchResult& r, std::stop_token s) {
                                      return attempt_once(deadline, r, s);
                                    });
  result.origin = FetchOrigin::kPeer;
  if (result.ok && result.content != last_) {
    last_ = result.content;
    last_sha256_ = sha256_hex(last_);
  }
  return result;
}

FetchResult FallbackSource::fetch(std::stop_token stop) {
  FetchResult from_peer = peer_->fetch(stop);
  if (from_peer.ok || from_peer.cancelled) return from_peer;
  spdlog::warn("Cannot fetch the AWS config from the peer: {}; falling back to irsa-svc (--peer-fallback irsa-svc)",
               from_peer.error);
  FetchResult r = irsa_svc_->fetch(stop);
  r.peer_requests += from_peer.peer_requests;
  r.attempts += from_peer.attempts;
  r.elapsed += from_peer.elapsed;
  if (!r.ok && !r.cancelled) r.error = "from the peer: " + from_peer.error + "; from irsa-svc: " + r.error;
  return r;
}

}  // namespace irsafs
