#include "common/text.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace irsafs {


Utf8Char utf8_char_at(std::string_view text, std::size_t i) {
  const auto at = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = at(i);
  if (c < 0x80) return {1, false};
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return {0, false};
  }
  for (std::size_t k = 1; k < len; ++k) {
    if (i + k == text.size()) return {0, true};
    const unsigned char d = at(i + k);
    if (k == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) return {0, false};
  }
  return {len, false};
}

std::optional<std::size_t> invalid_utf8_at(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_char_at(text, i).len;
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

std::string printable(std::string_view text, std::size_t max_bytes) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  static constexpr std::string_view kCut = "...";
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_char_at(text, i).len;
    std::string_view piece;
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (n == 0) {
      piece = kReplacement;
    } else if (c < 0x20 || c == 0x7F || (c == 0xC2 && static_cast<unsigned char>(text[i + 1]) <= 0x9F)) {
      piece = "?";
    } else {
      piece = text.substr(i, n);
    }
    if (max_bytes != std::string_view::npos && out.size() + piece.size() > max_bytes) {
      out += kCut;
      return out;
    }
    out += piece;
    i += n == 0 ? 1 : n;
  }
  return out;
}

std::string format_seconds(Duration d) { return fmt::format("{:.2f} s", std::chrono::duration<double>(d).count()); }

std::string iso8601(WallTime t, bool millis) {
  const auto secs = std::chrono::floor<std::chrono::seconds>(t);
  const std::tm tm = fmt::gmtime(std::chrono::system_clock::to_time_t(secs));
  if (!millis) return fmt::format("{:%Y-%m-%dT%H:%M:%S}Z", tm);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - secs).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", tm, ms);
}

}  // namespace irsafs
