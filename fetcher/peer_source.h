// The config from a serving peer (issue 14): `GET <peer>/v1/config` with the pod's projected
// service-account token as the bearer, instead of calling irsa-svc. The head of a Ray cluster
// serves it (`irsafs mount --serve-peers`, app/peers.h); its workers take it from there, so a
// cluster makes one irsa-svc call, not one per pod.
//
// The same deadline, RetryPolicy, validation and one-line errors as irsa-svc's Fetcher
// (fetcher/attempt.h). Refreshes are conditional: If-None-Match with the sha256 of the content
// this source last got; a 304 gives that content again (the service then publishes no new
// version). The head's 503 carries a Retry-After (its own hold-off) that paces the retries;
// 401 and 403 are permanent, with the head's reason.
#pragma once

#include <memory>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/secret.h"
#include "fetcher/attempt.h"
#include "fetcher/retry.h"
#include "fetcher/source.h"
#include "fetcher/transport.h"

namespace irsafs {

inline constexpr const char* kDefaultPeerTokenFile = "/var/run/secrets/irsafs/token";
inline constexpr const char* kPeerConfigPath = "/v1/config";

struct PeerSettings {
  std::string url;  // the peer's config URL (peer_config_url())
  std::string token_file = kDefaultPeerTokenFile;  // read at every attempt: the kubelet rotates it
  Duration deadline = std::chrono::seconds(60);    // the whole fetch, retries included
  RetryPolicy retry;
};

// The URL to GET for `--peer URL`: http(s) only; "/v1/config" is added when the URL has no
// path ("http://ray-head:6010" or "http://ray-head:6010/"). Throws std::invalid_argument with one
// line otherwise.
std::string peer_config_url(std::string_view peer);

// The token in `path`, trailing white space removed; empty with `error` set when the file
// cannot be read, is empty or larger than 64 KiB.
Secret read_token_file(const std::string& path, std::string& error);

class PeerSource final : public ConfigSource {
 public:
  PeerSource(PeerSettings settings, Transport& transport, Clock& clock, Random& random)
      : settings_(std::move(settings)), transport_(transport), clock_(clock), random_(random) {}
  // With a transport of its own (a request to the head may wait for the head's fetch: its
  // timeout is the deadline, not irsa-svc's per-request timeout).
  PeerSource(PeerSettings settings, std::unique_ptr<Transport> transport, Clock& clock, Random& random)
      : settings_(std::move(settings)),
        own_transport_(std::move(transport)),
        transport_(*own_transport_),
        clock_(clock),
        random_(random) {}

  FetchResult fetch(std::stop_token stop = {}) override;

  const PeerSettings& settings() const { return settings_; }

 private:
  Attempt attempt_once(TimePoint deadline, FetchResult& result, std::stop_token stop);

  PeerSettings settings_;
  std::unique_ptr<Transport> own_transport_;
  Transport& transport_;
  Clock& clock_;
  Random& random_;
  // The content the last successful fetch got, and its sha256: the next fetch asks with
  // If-None-Match. Only the fetch thread uses them (one fetch at a time).
  std::string last_;
  std::string last_sha256_;
};

// --peer-fallback irsa-svc: when the peer fails (after its whole deadline, or at once for a
// permanent failure), one fetch from irsa-svc. Not the default: a fleet whose head is down
// would fall back all at once, which is the herd the peer exists to avoid (docs/peers.md).
class FallbackSource final : public ConfigSource {
 public:
  FallbackSource(std::unique_ptr<ConfigSource> peer, std::unique_ptr<ConfigSource> irsa_svc)
      : peer_(std::move(peer)), irsa_svc_(std::move(irsa_svc)) {}
  FetchResult fetch(std::stop_token stop = {}) override;

 private:
  std::unique_ptr<ConfigSource> peer_;
  std::unique_ptr<ConfigSource> irsa_svc_;
};

}  // namespace irsafs
