// The libcurl implementation of Transport. One easy handle per request (fetches are rare and
// short); all defaults are set in one place (CurlTransport::perform).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/validator.h"
#include "fetcher/transport.h"

namespace irsafs {

struct TlsSettings {
  std::string ca_file;  // CURLOPT_CAINFO when set
  std::string ca_pem;   // CURLOPT_CAINFO_BLOB when set: PEM certificates, concatenated
  bool insecure = false;  // no peer or host verification
};

struct TransportSettings {
  TlsSettings tls;
  Duration timeout = std::chrono::seconds(10);  // one request, connect to last byte
  // The connection's own limit when shorter than the request's (the peer source lets a
  // request wait for the head's fetch, but not for a connection that does not come).
  std::optional<Duration> connect_timeout;
  std::size_t max_body = kMaxConfigBytes;       // stop reading beyond this
};

// Process-wide libcurl initialisation: construct once in main, before any thread starts, and
// keep until every thread that uses libcurl has ended. The constructor only gives OpenSSL the
// wiping allocator (which must come before OpenSSL's first allocation); libcurl itself, and with
// it OpenSSL's TLS (about 2 MiB resident), is initialised by the first request
// (CurlTransport::perform calls ensure()), so an idle mount does not carry it. That is safe while
// other threads run only with a thread-safe curl_global_init (CURL_VERSION_THREADSAFE, libcurl
// ≥ 7.84); with an older libcurl the constructor initialises it at once.
class CurlGlobal {
 public:
  CurlGlobal();
  ~CurlGlobal();
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;

  // Initialises libcurl unless done already; throws std::runtime_error when it cannot.
  static void ensure();
};

class CurlTransport final : public Transport {
 public:
  explicit CurlTransport(TransportSettings settings) : settings_(std::move(settings)) {}
  HttpResponse perform(const HttpRequest& request, std::stop_token stop) override;

 private:
  TransportSettings settings_;
};

}  // namespace irsafs
