// Validation of AWS config text against the grammar of Python 3.11's configparser, as botocore
// uses it: configparser.RawConfigParser() with its defaults (strict, delimiters '=' and ':',
// full-line comments '#' and ';', no inline comments, no valueless options, empty lines allowed
// in values), reading the file in text mode (UTF-8, universal newlines), and then botocore's own
// parse of indented blocks ("s3 =\n  addressing_style = path").
//
// The grammar, line by line, as configparser._read applies it:
//   - A line is split off at \n, \r\n or a lone \r (universal newlines).
//   - "Whitespace" is Python's str.isspace(): ASCII \t \n \v \f \r, 0x1c-0x1f, space, and the
//     Unicode spaces U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
//     U+3000. Indentation is counted in characters, not bytes.
//   - Blank lines, and lines whose stripped text starts with '#' or ';', are skipped.
//   - A line indented more than the current option's line is a continuation of that option
//     (only while there is a current option: a section header ends it).
//   - Otherwise, a stripped line matching re.match(r"\[(.+)\]") is a section header named by
//     everything up to its LAST ']' ("[a] x" is section "a", "[]" is not a header).
//     Section names are compared exactly; a repeated one is a DuplicateSectionError, except
//     DEFAULT, which may be repeated.
//   - Before the first header any other line is a MissingSectionHeaderError.
//   - Otherwise the line must hold '=' or ':'; the option name is the text before the first of
//     them, right-stripped, and must not be empty. Names are lower-cased; a repeated
//     (section, name) pair is a DuplicateOptionError (also across repeated [DEFAULT] headers).
//   - botocore parses a value whose first line is empty and which has continuation lines as a
//     nested block: every non-blank line of it (str.splitlines, so U+2028 and U+2029 also split
//     it) must contain '='.
//
// irsafs' own plausibility rules on top (configparser would accept these):
//   - The text is not empty, is at most kMaxConfigBytes, and has at least one [section] header.
//   - No NUL, no C0 control other than \t \r \n, no DEL (0x7f) and no C1 control
//     (U+0080-U+009F): configparser takes them as ordinary characters, but a config never
//     contains them, binary data usually does.
//   - A leading UTF-8 byte order mark gets its own reason (configparser would fail on it anyway:
//     Python's utf-8 codec keeps U+FEFF, so the first line is not a section header).
//   - Option names must be ASCII: configparser lower-cases them with the full Unicode mapping
//     (the Kelvin sign U+212A becomes 'k'), which a duplicate check without Unicode tables
//     could not reproduce, and no AWS setting has a non-ASCII name.
//   - Nested blocks are checked in [DEFAULT] too (botocore only parses DEFAULT values through
//     the sections that inherit them).
//
// Reasons give the rule and a line number or byte offset (1-based), never the text.

#include "common/validator.h"

#include "common/text.h"

#include <functional>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <utility>

namespace irsafs {
namespace {

using std::size_t;
using std::string_view;

std::string at_line(size_t lineno, std::string_view what) {
  return "line " + std::to_string(lineno) + ": " + std::string(what);
}

std::string at_byte(size_t offset, std::string_view what) {
  return "byte " + std::to_string(offset + 1) + ": " + std::string(what);
}

unsigned char byte(string_view s, size_t i) { return static_cast<unsigned char>(s[i]); }

bool is_continuation_byte(unsigned char c) { return (c & 0xC0) == 0x80; }

// ---------------------------------------------------------------------------------------------
// Bytes: size, encoding, control characters.

struct ByteCheck {
  std::string error;  // empty when fine
  size_t usable = 0;  // bytes that form complete characters (all of them unless a prefix
                      // ends inside a multi-byte sequence)
};

// Checks that `text` is well-formed UTF-8 (as Python's strict utf-8 codec decodes it: no
// overlong forms, no surrogates, nothing above U+10FFFF) without unwanted control characters.
// With `allow_truncated_tail`, a sequence cut short by the end of the text is not an error.
// Checking starts at `from` (the bytes before it passed already).
ByteCheck check_bytes(string_view text, size_t from, bool allow_truncated_tail) {
  ByteCheck r;
  if (from == 0 && text.size() >= 3 && byte(text, 0) == 0xEF && byte(text, 1) == 0xBB && byte(text, 2) == 0xBF) {
    r.error = at_byte(0, "UTF-8 byte order mark (configparser does not skip it)");
    return r;
  }
  size_t i = from;
  while (i < text.size()) {
    const unsigned char c = byte(text, i);
    if (c < 0x80) {
      if (c == 0) {
        r.error = at_byte(i, "NUL byte");
        return r;
      }
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F) {
        r.error = at_byte(i, "control character");
        return r;
      }
      ++i;
      continue;
    }
    const Utf8Char ch = utf8_char_at(text, i);
    if (ch.truncated && allow_truncated_tail) {
      r.usable = i;
      return r;
    }
    if (ch.len == 0) {
      r.error = "invalid UTF-8 at byte " + std::to_string(i + 1) + (ch.truncated ? " (truncated sequence)" : "");
      return r;
    }
    if (c == 0xC2 && byte(text, i + 1) <= 0x9F) {
      r.error = at_byte(i, "control character (C1)");
      return r;
    }
    i += ch.len;
  }
  r.usable = text.size();
  return r;
}

// ---------------------------------------------------------------------------------------------
// Characters. The text handed to these is well-formed UTF-8 (check_bytes ran first).

// The length in bytes of the whitespace character (Python's str.isspace) starting at s[i],
// or 0 if the character there is not whitespace.
size_t space_at(string_view s, size_t i) {
  const unsigned char c = byte(s, i);
  if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F)) return 1;
  const auto next = [&](size_t k) -> int { return i + k < s.size() ? byte(s, i + k) : -1; };
  if (c == 0xC2) return (next(1) == 0x85 || next(1) == 0xA0) ? 2 : 0;  // U+0085, U+00A0
  if (c == 0xE1) return (next(1) == 0x9A && next(2) == 0x80) ? 3 : 0;  // U+1680
  if (c == 0xE2 && next(1) == 0x80) {
    const int d = next(2);
    // U+2000-U+200A, U+2028, U+2029, U+202F
    return ((d >= 0x80 && d <= 0x8A) || d == 0xA8 || d == 0xA9 || d == 0xAF) ? 3 : 0;
  }
  if (c == 0xE2) return (next(1) == 0x81 && next(2) == 0x9F) ? 3 : 0;  // U+205F
  if (c == 0xE3) return (next(1) == 0x80 && next(2) == 0x80) ? 3 : 0;  // U+3000
  return 0;
}

// U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: str.splitlines() splits at them.
size_t line_separator_at(string_view s, size_t i) {
  return (i + 2 < s.size() && byte(s, i) == 0xE2 && byte(s, i + 1) == 0x80 &&
          (byte(s, i + 2) == 0xA8 || byte(s, i + 2) == 0xA9))
             ? 3
             : 0;
}

string_view rstrip(string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && is_continuation_byte(byte(s, start))) --start;
    if (space_at(s, start) != end - start) break;
    end = start;
  }
  return s.substr(0, end);
}

// Leading whitespace: its length in bytes and in characters.
struct Indent {
  size_t bytes = 0;
  size_t chars = 0;
};

Indent leading_space(string_view s) {
  Indent in;
  while (in.bytes < s.size()) {
    const size_t n = space_at(s, in.bytes);
    if (n == 0) break;
    in.bytes += n;
    ++in.chars;
  }
  return in;
}

bool is_blank(string_view s) { return leading_space(s).bytes == s.size(); }

bool is_ascii(string_view s) {
  for (const char ch : s) {
    if (static_cast<unsigned char>(ch) >= 0x80) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Lines.

struct Line {
  enum class Kind { blank, comment, content };
  Kind kind = Kind::blank;
  size_t indent = 0;  // leading whitespace, in characters
  string_view body;   // the line without leading and trailing whitespace
};

Line classify(string_view raw) {
  Line line;
  const Indent in = leading_space(raw);
  line.indent = in.chars;
  line.body = rstrip(raw.substr(in.bytes));
  if (line.body.empty()) {
    line.kind = Line::Kind::blank;
  } else if (line.body.front() == '#' || line.body.front() == ';') {
    line.kind = Line::Kind::comment;
  } else {
    line.kind = Line::Kind::content;
  }
  return line;
}

// The parser state of configparser._read, plus what the plausibility rules need.
class Parser {
 public:
  // What changes from line to line (the sets of names seen only grow).
  struct Scalars {
    bool in_section = false;
    bool in_option = false;  // configparser's `optname` is set: continuation lines may follow
    bool nested = false;     // the current option's value started empty
    bool saw_header = false;
    bool saw_text = false;  // a line that is not blank
    size_t indent_level = 0;
    std::string section;
  };

  // Judges one line and takes it in. A complete line is judged fully; an incomplete one (the
  // last line of a prefix, more bytes may follow) only fails when no continuation of it can be
  // valid. Returns an error reason, or an empty string.
  std::string feed(string_view raw, size_t lineno, bool complete) { return judge(raw, lineno, complete, s_, false); }

  // Judges the last line of the text without taking it in (it may still grow): the state it
  // would leave goes to `after`.
  std::string peek(string_view raw, size_t lineno, bool complete, Scalars& after) const {
    after = s_;
    return judge(raw, lineno, complete, after, true);
  }

  // The rules that can only be judged on the whole text.
  static std::string finish(const Scalars& st) {
    if (!st.saw_text) return "empty body";
    if (!st.saw_header) return "no [section] header";
    return {};
  }
  const Scalars& scalars() const { return s_; }

 private:
  // The state is `st`; with `dry`, the sets of names are only looked at, not added to.
  std::string judge(string_view raw, size_t lineno, bool complete, Scalars& st, bool dry) const {
    const Line line = classify(raw);
    if (line.kind != Line::Kind::blank) st.saw_text = true;
    if (line.kind != Line::Kind::content) return {};
    const string_view body = line.body;

    if (st.in_section && st.in_option && line.indent > st.indent_level) {
      return st.nested ? check_nested(body, lineno, complete) : std::string();
    }
    st.indent_level = line.indent;

    if (body.front() == '[') {
      if (!complete) return {};  // "[x" can always still become a new section header
      const size_t close = body.rfind(']');
      if (close != string_view::npos && close >= 2) return section(body.substr(1, close - 1), lineno, st, dry);
    }

    const size_t delim = body.find_first_of("=:");
    if (!st.in_section) {
      return at_line(lineno, delim == string_view::npos
                                 ? "not a [section] header (none before this line)"
                                 : "option line outside any section");
    }
    if (delim == string_view::npos) {
      if (complete) return at_line(lineno, "not a section header, an option or a continuation");
      // Whatever follows, the name will start with this text.
      return is_ascii(body) ? std::string() : at_line(lineno, "non-ASCII option name");
    }
    if (delim == 0) return at_line(lineno, "option with an empty name");
    std::string name(rstrip(body.substr(0, delim)));
    if (!is_ascii(name)) return at_line(lineno, "non-ASCII option name");
    for (char& ch : name) {
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    }
    auto key = std::make_pair(st.section, std::move(name));
    if (dry ? options_.contains(key) : !options_.insert(std::move(key)).second) {
      return at_line(lineno, "duplicate option in section");
    }
    st.in_option = true;
    const string_view value = body.substr(delim + 1);
    st.nested = is_blank(value);
    return {};
  }

  std::string section(string_view header, size_t lineno, Scalars& st, bool dry) const {
    if (header == "DEFAULT") {
      st.section = "DEFAULT";  // may repeat; its options still may not
    } else {
      if (dry ? sections_.contains(header) : !sections_.emplace(header).second) {
        return at_line(lineno, "duplicate section");
      }
      st.section = std::string(header);
    }
    st.in_section = true;
    st.saw_header = true;
    st.in_option = false;
    return {};
  }

  // A continuation line of a value botocore parses as a nested block: each non-blank piece of
  // it (split at U+2028 / U+2029 like str.splitlines) must contain '='. In an incomplete line
  // the last piece may still get its '='.
  static std::string check_nested(string_view body, size_t lineno, bool complete) {
    size_t start = 0;
    for (;;) {
      size_t end = start;
      size_t sep = 0;
      while (end < body.size() && (sep = line_separator_at(body, end)) == 0) ++end;
      const string_view piece = body.substr(start, end - start);
      const bool last = end == body.size();
      if (!is_blank(piece) && piece.find('=') == string_view::npos && (complete || !last)) {
        return at_line(lineno, "line of an indented (nested) block without '='");
      }
      if (last) return {};
      start = end + sep;
    }
  }

  Scalars s_;
  // Grown by feed() only; judge() is const for peek() and mutates these through feed().
  mutable std::set<std::string, std::less<>> sections_;           // DEFAULT is not in here
  mutable std::set<std::pair<std::string, std::string>> options_;  // (section, lower-cased name)
};

}  // namespace

// The state of one pass over a growing text: the bytes checked so far, the parser after the
// last complete line, and where the incomplete last line starts.
struct ConfigChecker::State {
  Parser parser;
  size_t checked = 0;     // bytes that passed check_bytes (complete characters only)
  size_t line_start = 0;  // where the incomplete last line starts
  size_t lineno = 0;      // complete lines taken in
  bool skip_lf = false;   // the last complete line ended with a \r at the end of the text: a
                          // following \n only joins it to \r\n
  size_t seen = 0;
  std::string error;  // sticky: a text that failed stays failed whatever is appended
};

ConfigChecker::ConfigChecker() : s_(std::make_unique<State>()) {}
ConfigChecker::~ConfigChecker() = default;
ConfigChecker::ConfigChecker(ConfigChecker&&) noexcept = default;
ConfigChecker& ConfigChecker::operator=(ConfigChecker&&) noexcept = default;

void ConfigChecker::reset() { s_ = std::make_unique<State>(); }

std::size_t ConfigChecker::seen() const { return s_->seen; }

Validation ConfigChecker::append(std::string_view text) {
  State& s = *s_;
  if (!s.error.empty()) return Validation::fail(s.error);
  s.seen = text.size();
  if (text.size() > kMaxConfigBytes) {
    s.error = "larger than 1 MiB";
    return Validation::fail(s.error);
  }
  const ByteCheck bytes = check_bytes(text, s.checked, true);
  if (!bytes.error.empty()) {
    s.error = bytes.error;
    return Validation::fail(s.error);
  }
  s.checked = bytes.usable;
  // Characters cut short by the end are left out: the last line stays incomplete.
  const string_view usable = text.substr(0, s.checked);
  if (s.skip_lf && s.line_start < usable.size()) {
    if (usable[s.line_start] == '\n') ++s.line_start;
    s.skip_lf = false;
  }
  for (size_t eol = usable.find_first_of("\r\n", s.line_start); eol != string_view::npos;
       eol = usable.find_first_of("\r\n", s.line_start)) {
    if (std::string error = s.parser.feed(usable.substr(s.line_start, eol - s.line_start), ++s.lineno, true);
        !error.empty()) {
      s.error = std::move(error);
      return Validation::fail(s.error);
    }
    s.line_start = eol + 1;
    if (usable[eol] == '\r') {
      if (s.line_start == usable.size()) {
        s.skip_lf = true;
      } else if (usable[s.line_start] == '\n') {
        ++s.line_start;
      }
    }
  }
  if (s.line_start < usable.size()) {
    Parser::Scalars after;
    if (std::string error = s.parser.peek(usable.substr(s.line_start), s.lineno + 1, false, after); !error.empty()) {
      return Validation::fail(std::move(error));
    }
  }
  return Validation::pass();
}

Validation ConfigChecker::complete(std::string_view text) const {
  const State& s = *s_;
  if (!s.error.empty()) return Validation::fail(s.error);
  if (s.checked < text.size()) {
    return Validation::fail("invalid UTF-8 at byte " + std::to_string(s.checked + 1) + " (truncated sequence)");
  }
  Parser::Scalars after = s.parser.scalars();
  if (s.line_start < text.size()) {
    if (std::string error = s.parser.peek(text.substr(s.line_start), s.lineno + 1, true, after); !error.empty()) {
      return Validation::fail(std::move(error));
    }
  }
  if (std::string error = Parser::finish(after); !error.empty()) return Validation::fail(std::move(error));
  return Validation::pass();
}

namespace {

// One pass over the whole text: the same code as a writer's growing text.
Validation run(string_view text, bool whole) {
  ConfigChecker checker;
  Validation v = checker.append(text);
  if (!v || !whole) return v;
  return checker.complete(text);
}

Validation run_noexcept(string_view text, bool whole) noexcept {
  try {
    return run(text, whole);
  } catch (const std::bad_alloc&) {
    return Validation::fail("out of memory");  // short enough not to allocate
  } catch (...) {
    return Validation::fail("internal error");
  }
}

}  // namespace

Validation validate_config(std::string_view text) { return run_noexcept(text, true); }

Validation validate_config_prefix(std::string_view text) { return run_noexcept(text, false); }

}  // namespace irsafs
