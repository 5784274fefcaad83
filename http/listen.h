// Where `irsafs mount` listens for HTTP: --listen ADDR:PORT | none, else the host and port of
// DOMINO_IRSA_PROXY (the old sidecar's address, set by Domino's chart in every container),
// else nowhere, so that several mounts on one machine never collide by default.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace irsafs {

struct ListenAddress {
  std::string ip;  // numeric and canonical (inet_ntop): "127.0.0.1", "::1"
  std::uint16_t port = 0;

  bool ipv6() const { return ip.find(':') != std::string::npos; }
  // "127.0.0.1:6003" or "[::1]:6003": what messages name, and what parse_listen_address reads.
  std::string to_string() const;
  friend bool operator==(const ListenAddress&, const ListenAddress&) = default;
};

// ADDR:PORT, ADDR being an IPv4 address, a bracketed IPv6 address or `localhost` (127.0.0.1);
// PORT 1 to 65535. No name is resolved: a listener bound to whatever DNS says today is not
// what anyone asking for a local port means. Throws std::invalid_argument naming `what` (e.g.
// "--listen"), the value and what is expected.
ListenAddress parse_listen_address(std::string_view text, std::string_view what = "--listen");

// The listener of a mount: `flag` (--listen) when given — "none" turns it off — else the host
// and port of `domino_irsa_proxy` (http://HOST:PORT[/...], or HOST:PORT) when set and not empty,
// else none. Bad values throw std::invalid_argument (a wrong DOMINO_IRSA_PROXY too: the mount
// cannot serve the sidecar's port the workload expects; --listen overrides it).
std::optional<ListenAddress> resolve_listen(const std::optional<std::string>& flag,
                                            const std::optional<std::string>& domino_irsa_proxy);

}  // namespace irsafs
