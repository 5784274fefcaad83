// libFuzzer target for common/validator.cc: no crash, no sanitizer report, and these
// invariants on any input x:
//   - validate_config(x) passes => validate_config_prefix(x[:k]) passes for every k (for inputs
//     over 1 KiB: for a spread of k and around every line ending), and x has
//     no NUL byte, and x + "\n" also passes;
//   - validate_config_prefix(x[:k]) fails => validate_config_prefix(x) and validate_config(x)
//     fail (a refused prefix can never become valid);
//   - a reason is present exactly on failure, and is one of the fixed messages (digits aside):
//     it never quotes the text;
//   - \n and \r\n are the same line ending: turning every \n into \r\n keeps the verdict, and
//     the reason of a line-numbered failure.
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/validator.h"

namespace {

using irsafs::Validation;

[[noreturn]] void fail(const char* what, std::string_view reason = {}) {
  std::fprintf(stderr, "invariant broken: %s [%.*s]\n", what, static_cast<int>(reason.size()),
               reason.data());
  std::abort();
}

// The reason vocabulary of validator.cc, with the numbers taken out.
bool known_reason(const std::string& reason) {
  std::string shape;
  for (const char c : reason) {
    if (!std::isdigit(static_cast<unsigned char>(c))) shape += c;
  }
  static const std::string_view kShapes[] = {
      "larger than  MiB",
      "empty body",
      "no [section] header",
      "byte : UTF- byte order mark (configparser does not skip it)",
      "byte : NUL byte",
      "byte : control character",
      "byte : control character (C)",
      "invalid UTF- at byte ",
      "invalid UTF- at byte  (truncated sequence)",
      "line : not a [section] header (none before this line)",
      "line : option line outside any section",
      "line : not a section header, an option or a continuation",
      "line : non-ASCII option name",
      "line : option with an empty name",
      "line : duplicate option in section",
      "line : duplicate section",
      "line : line of an indented (nested) block without '='",
  };
  for (const std::string_view s : kShapes) {
    if (shape == s) return true;
  }
  return false;
}

void check_shape(const Validation& v) {
  if (v.ok != v.reason.empty()) fail("reason present iff failed", v.reason);
  if (!v.ok && !known_reason(v.reason)) fail("unknown reason (quotes the text?)", v.reason);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const Validation whole = irsafs::validate_config(text);
  const Validation prefix = irsafs::validate_config_prefix(text);
  check_shape(whole);
  check_shape(prefix);

  if (whole.ok) {
    if (!prefix.ok) fail("valid config is not a valid prefix", prefix.reason);
    if (text.find('\0') != std::string_view::npos) fail("accepted a NUL byte");
    // Every cut point of small inputs; of big ones (quadratic cost) a spread, plus the bytes
    // around each line ending and at the end.
    const std::size_t step = size <= 1024 ? 1 : size / 512;
    for (std::size_t k = 0; k < size; ++k) {
      const bool near_eol = (k > 0 && (text[k - 1] == '\r' || text[k - 1] == '\n')) ||
                            (text[k] == '\r' || text[k] == '\n') || k + 8 >= size;
      if (k % step != 0 && !near_eol) continue;
      const Validation p = irsafs::validate_config_prefix(text.substr(0, k));
      if (!p.ok) fail("a prefix of a valid config is refused", p.reason);
    }
    if (!irsafs::validate_config(std::string(text) + "\n").ok) fail("valid config + \\n is invalid");
  } else if (prefix.ok) {
    // A refused prefix stays refused. All cut points for small inputs, a spread for big ones.
    const std::size_t step = size <= 512 ? 1 : size / 256;
    for (std::size_t k = 0; k < size; k += step) {
      const Validation p = irsafs::validate_config_prefix(text.substr(0, k));
      if (!p.ok) fail("a prefix is refused but a longer one accepted", p.reason);
    }
  }

  // The same text with \r\n line endings.
  std::string crlf;
  crlf.reserve(size + size / 8);
  for (std::size_t i = 0; i < size; ++i) {
    if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) crlf += '\r';
    crlf += text[i];
  }
  if (crlf.size() <= irsafs::kMaxConfigBytes && text.size() <= irsafs::kMaxConfigBytes) {
    const Validation w2 = irsafs::validate_config(crlf);
    if (w2.ok != whole.ok) fail("\\r\\n changed the verdict", w2.reason);
    if (!whole.ok && whole.reason.rfind("line ", 0) == 0 && w2.reason != whole.reason) {
      fail("\\r\\n changed a line-numbered reason", w2.reason);
    }
    if (irsafs::validate_config_prefix(crlf).ok != prefix.ok) fail("\\r\\n changed the prefix verdict");
  }
  return 0;
}
