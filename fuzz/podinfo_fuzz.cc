// libFuzzer target for app/podinfo.cc: no crash, no sanitizer report, and a round trip:
// every label parsed from the input, written back as key="value" with each value byte escaped
// as \xNN (one of the forms Go's %q uses), parses back to the same labels. Keys are never
// empty and never contain '=' or '\n'.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "app/podinfo.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto labels = irsafs::parse_pod_labels(text);

  static constexpr char kHex[] = "0123456789abcdef";
  std::string again;
  for (const auto& [key, value] : labels) {
    if (key.empty()) fail("empty key");
    if (key.find_first_of("=\n") != std::string::npos) fail("key holds '=' or a newline");
    again += key;
    again += "=\"";
    for (const char c : value) {
      const auto b = static_cast<unsigned char>(c);
      again += "\\x";
      again += kHex[b >> 4];
      again += kHex[b & 0xF];
    }
    again += "\"\n";
  }
  if (irsafs::parse_pod_labels(again) != labels) fail("round trip changed the labels");
  return 0;
}
