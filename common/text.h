// Text that reaches messages, logs and .status: always valid UTF-8 (nlohmann's dump throws on
// anything else, and a log line cut inside a character is unreadable).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace irsafs {

// The UTF-8 character starting at text[i]: its length when well-formed (no overlong forms, no
// surrogates, nothing above U+10FFFF), else 0; `truncated` when the bytes there begin one that
// the end of `text` cuts short.
struct Utf8Char {
  std::size_t len = 0;
  bool truncated = false;
};
Utf8Char utf8_char_at(std::string_view text, std::size_t i);

// The offset of the first byte that is not part of well-formed UTF-8 (no overlong forms, no
// surrogates, nothing above U+10FFFF), or nullopt when all of `text` is well-formed.
std::optional<std::size_t> invalid_utf8_at(std::string_view text);

// `text` made safe for a one-line message: ill-formed bytes become U+FFFD, control characters
// (C0, DEL, C1) become '?', and it is cut to at most `max_bytes` bytes on a character boundary,
// "..." marking the cut.
std::string printable(std::string_view text, std::size_t max_bytes = std::string_view::npos);

// "1.25 s": durations in log lines and messages.
std::string format_seconds(Duration d);

// "2026-12-01T12:00:00Z" (UTC; with milliseconds "2026-12-01T12:00:00.123Z"): .status and the
// JSON log lines.
std::string iso8601(WallTime t, bool millis = false);

}  // namespace irsafs
