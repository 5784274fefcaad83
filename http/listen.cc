#include "http/listen.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace irsafs {
namespace {

constexpr std::string_view kExpectedAddress =
    "ADDR:PORT, ADDR an IPv4 address, [an IPv6 address] or localhost, PORT from 1 to 65535";

// The value as it may appear in a message: quoted, bytes that are not printable ASCII as \xNN,
// and cut short, so that a message stays one readable line whatever the environment holds.
std::string quoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  constexpr std::size_t kMax = 200;
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x20 || b >= 0x7f || b == '"' || b == '\\') {
      out += "\\x";
      out += kHex[b >> 4];
      out += kHex[b & 0xf];
    } else {
      out += static_cast<char>(b);
    }
  }
  if (s.size() > kMax) out += "...";
  out += '"';
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Parses HOST:PORT; on failure returns the reason (empty on success).
std::string parse_host_port(std::string_view text, ListenAddress& out) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return "the IPv6 address has no closing ']'";
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return "no :PORT after the IPv6 address";
    port = rest.substr(1);
    unsigned char buf[16];
    const std::string h(host);
    if (inet_pton(AF_INET6, h.c_str(), buf) != 1) return "the address in brackets is not an IPv6 address";
    char canon[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, buf, canon, sizeof canon);
    out.ip = canon;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return "no :PORT";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.empty()) return "no address before :PORT";
    if (host.find(':') != std::string_view::npos) return "an IPv6 address needs brackets, e.g. [::1]:6003";
    if (iequals(host, "localhost")) {
      out.ip = "127.0.0.1";
    } else {
      unsigned char buf[4];
      const std::string h(host);
      if (inet_pton(AF_INET, h.c_str(), buf) != 1) {
        return "the address is not an IP address or localhost (names are not resolved)";
      }
      char canon[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, buf, canon, sizeof canon);
      out.ip = canon;
    }
  }
  if (port.empty()) return "the port is empty";
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return "the port is not a number from 1 to 65535";
  }
  unsigned value = 0;
  for (const char c : port) value = value * 10 + static_cast<unsigned>(c - '0');
  if (value < 1 || value > 65535) return "the port is not a number from 1 to 65535";
  out.port = static_cast<std::uint16_t>(value);
  return {};
}

}  // namespace

std::string ListenAddress::to_string() const {
  return (ipv6() ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

ListenAddress parse_listen_address(std::string_view text, std::string_view what) {
  ListenAddress a;
  if (const std::string why = parse_host_port(text, a); !why.empty()) {
    throw std::invalid_argument("Cannot use " + std::string(what) + " " + quoted(text) + ": " + why + "; expected " +
                                std::string(kExpectedAddress) + ", or none");
  }
  return a;
}

std::optional<ListenAddress> resolve_listen(const std::optional<std::string>& flag,
                                            const std::optional<std::string>& domino_irsa_proxy) {
  if (flag) {
    if (*flag == "none") return std::nullopt;
    return parse_listen_address(*flag, "--listen");
  }
  if (!domino_irsa_proxy || domino_irsa_proxy->empty()) return std::nullopt;

  const std::string_view url = *domino_irsa_proxy;
  auto fail = [&](std::string_view why) -> std::invalid_argument {
    return std::invalid_argument("Cannot use DOMINO_IRSA_PROXY " + quoted(url) + " as the HTTP listener: " +
                                 std::string(why) + "; expected http://HOST:PORT with HOST an IPv4 address, "
                                 "[an IPv6 address] or localhost and PORT from 1 to 65535 (or pass --listen "
                                 "ADDR:PORT, or --listen none)");
  };
  std::string_view rest = url;
  if (const auto sep = rest.find("://"); sep != std::string_view::npos) {
    // Only plain HTTP: the sidecar served http://localhost:6003 and irsafs has no TLS listener.
    if (!iequals(rest.substr(0, sep), "http")) throw fail("the scheme is not http");
    rest = rest.substr(sep + 3);
  }
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) throw fail("it holds user information");
  ListenAddress a;
  if (const std::string why = parse_host_port(authority, a); !why.empty()) throw fail(why);
  return a;
}

}  // namespace irsafs
