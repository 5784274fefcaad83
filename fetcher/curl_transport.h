// The libcurl implementation of Transport. One easy handle per request (fetches are rare and
// short); all defaults are set in one place (CurlTransport::perform).
#pragma once

#include <cstddef>
#include <string>

#include "common/clock.h"
#include "fetcher/transport.h"
#include "common/validator.h"

namespace irsafs {

struct TlsSettings {
  std::string ca_file;  // CURLOPT_CAINFO when set
  std::string ca_pem;   // CURLOPT_CAINFO_BLOB when set: PEM certificates, concatenated
  bool insecure = false;  // no peer or host verification
};

struct TransportSettings {
  TlsSettings tls;
  Duration timeout = std::chrono::seconds(10);  // one request, connect to last byte
  std::size_t max_body = kMaxConfigBytes;       // stop reading beyond this
};

// Process-wide libcurl initialisation: construct once in main, before any thread starts.
class CurlGlobal {
 public:
  CurlGlobal();
  ~CurlGlobal();
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
};

class CurlTransport final : public Transport {
 public:
  explicit CurlTransport(TransportSettings settings) : settings_(std::move(settings)) {}
  HttpResponse perform(const HttpRequest& request, std::stop_token stop) override;

 private:
  TransportSettings settings_;
};

}  // namespace irsafs
