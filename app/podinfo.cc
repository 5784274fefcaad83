// The downward-API labels file. The kubelet writes one line per label, sorted by key:
//   key="value"
// with the value quoted by Go's %q (strconv.Quote): \" \\ \a \b \f \n \r \t \v, \xNN for bytes
// that are not valid UTF-8 or are ASCII controls, \uNNNN / \UNNNNNNNN for other unprintable
// runes; printable UTF-8 is written as it is. Octal escapes (\NNN), which Go's Unquote also
// accepts, are decoded too. A line that does not fit this shape (no '=', empty key, value not
// a closed quoted string, anything after the closing quote, an unknown or malformed escape)
// is skipped. A key that appears twice keeps its last value.

#include "app/podinfo.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace irsafs {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, char32_t r) {
  if (r < 0x80) {
    out += static_cast<char>(r);
  } else if (r < 0x800) {
    out += static_cast<char>(0xC0 | (r >> 6));
    out += static_cast<char>(0x80 | (r & 0x3F));
  } else if (r < 0x10000) {
    out += static_cast<char>(0xE0 | (r >> 12));
    out += static_cast<char>(0x80 | ((r >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (r & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (r >> 18));
    out += static_cast<char>(0x80 | ((r >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((r >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (r & 0x3F));
  }
}

// Decodes a Go double-quoted string literal that makes up all of `q` (quotes included).
std::optional<std::string> unquote(std::string_view q) {
  if (q.size() < 2 || q.front() != '"' || q.back() != '"') return std::nullopt;
  const std::string_view s = q.substr(1, q.size() - 2);
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (c == '"' || c == '\n') return std::nullopt;  // an unescaped quote ends the string early
    if (c != '\\') {
      out += c;
      ++i;
      continue;
    }
    if (i + 1 >= s.size()) return std::nullopt;
    const char e = s[i + 1];
    i += 2;
    switch (e) {
      case 'a': out += '\a'; continue;
      case 'b': out += '\b'; continue;
      case 'f': out += '\f'; continue;
      case 'n': out += '\n'; continue;
      case 'r': out += '\r'; continue;
      case 't': out += '\t'; continue;
      case 'v': out += '\v'; continue;
      case '\\': out += '\\'; continue;
      case '"': out += '"'; continue;
      default: break;
    }
    if (e == 'x' || e == 'u' || e == 'U') {
      const std::size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
      if (i + digits > s.size()) return std::nullopt;
      std::uint32_t v = 0;
      for (std::size_t k = 0; k < digits; ++k) {
        const int h = hex_value(s[i + k]);
        if (h < 0) return std::nullopt;
        v = (v << 4) | static_cast<std::uint32_t>(h);
      }
      i += digits;
      if (e == 'x') {
        out += static_cast<char>(v);  // a raw byte
      } else {
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return std::nullopt;  // as Go's Unquote
        append_utf8(out, static_cast<char32_t>(v));
      }
      continue;
    }
    if (e >= '0' && e <= '7') {  // \NNN, exactly three octal digits, at most \377
      if (i + 2 > s.size()) return std::nullopt;
      unsigned v = static_cast<unsigned>(e - '0');
      for (std::size_t k = 0; k < 2; ++k) {
        const char d = s[i + k];
        if (d < '0' || d > '7') return std::nullopt;
        v = v * 8 + static_cast<unsigned>(d - '0');
      }
      if (v > 0xFF) return std::nullopt;
      i += 2;
      out += static_cast<char>(v);
      continue;
    }
    return std::nullopt;  // an unknown escape
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> parse_pod_labels(std::string_view text) {
  std::map<std::string, std::string> labels;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    std::optional<std::string> value = unquote(line.substr(eq + 1));
    if (!value) continue;
    labels.insert_or_assign(std::string(line.substr(0, eq)), std::move(*value));
  }
  return labels;
}

std::optional<std::string> workload_type_from_file(const std::string& path) {
  // Labels are small (Kubernetes caps a value at 63 bytes); anything bigger is not this file.
  constexpr std::size_t kMaxLabelsBytes = std::size_t{1} << 20;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<std::string> result;
  try {
    std::string text;
    char buf[4096];
    bool ok = true;
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || text.size() + static_cast<std::size_t>(n) > kMaxLabelsBytes) {
        ok = false;  // EISDIR, EIO, ... or not a labels file
        break;
      }
      if (n == 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    if (ok) {
      const auto labels = parse_pod_labels(text);
      const auto it = labels.find(std::string(kWorkloadTypeLabel));
      if (it != labels.end() && !it->second.empty()) result = it->second;
    }
  } catch (...) {
    result.reset();
  }
  ::close(fd);
  return result;
}

}  // namespace irsafs
