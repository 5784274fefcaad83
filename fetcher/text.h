// Text that reaches messages, logs and .status: always valid UTF-8 (nlohmann's dump throws on
// anything else, and a log line cut inside a character is unreadable).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace irsafs {

// The offset of the first byte that is not part of well-formed UTF-8 (no overlong forms, no
// surrogates, nothing above U+10FFFF), or nullopt when all of `text` is well-formed.
std::optional<std::size_t> invalid_utf8_at(std::string_view text);

// `text` made safe for a one-line message: ill-formed bytes become U+FFFD, control characters
// (C0, DEL, C1) become '?', and it is cut to at most `max_bytes` bytes on a character boundary,
// "..." marking the cut.
std::string printable(std::string_view text, std::size_t max_bytes = std::string_view::npos);

}  // namespace irsafs
