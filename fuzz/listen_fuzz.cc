// libFuzzer target for http/listen.cc: the input as --listen and as DOMINO_IRSA_PROXY. No crash,
// no sanitizer report, nothing thrown but std::invalid_argument (whose message stays one line
// and names the option), and every accepted address is canonical: port 1-65535, and its
// to_string() reads back, as --listen and as http://.../, to the same address.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

#include "http/listen.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

void check(const std::optional<irsafs::ListenAddress>& a) {
  if (!a) return;
  if (a->port == 0) fail("port 0 accepted");
  const std::string text = a->to_string();
  if (irsafs::resolve_listen(text, std::nullopt) != a) fail("--listen round trip changed the address");
  if (irsafs::resolve_listen(std::nullopt, "http://" + text + "/") != a) fail("URL round trip changed the address");
}

void run(const std::optional<std::string>& flag, const std::optional<std::string>& env, const char* name) {
  try {
    check(irsafs::resolve_listen(flag, env));
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    if (message.find('\n') != std::string::npos) fail("a message spans lines");
    if (message.find(name) == std::string::npos) fail("a message does not name its option");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  run(text, std::nullopt, "--listen");
  run(std::nullopt, text, "DOMINO_IRSA_PROXY");
  return 0;
}
