// Validation of AWS config text, written from the grammar of Python's configparser
// (RawConfigParser defaults, strict=True), which is what botocore reads the file with.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace irsafs {

// The largest config irsafs accepts, fetched or written (1 MiB).
inline constexpr std::size_t kMaxConfigBytes = std::size_t{1} << 20;

struct Validation {
  bool ok = true;
  // When !ok: which rule was broken and where, e.g. "line 3: not a section header,
  // option or continuation". Never quotes the text itself (it may hold secrets).
  std::string reason;

  explicit operator bool() const { return ok; }
  static Validation pass() { return {}; }
  static Validation fail(std::string why) { return {false, std::move(why)}; }
};

// The same judgement for a text that grows by appends (a writer's text arriving in several
// write()s), in time proportional to the bytes appended plus the length of the last line: a
// text written in many pieces costs O(its size), not O(size^2).
class ConfigChecker {
 public:
  ConfigChecker();
  ~ConfigChecker();
  ConfigChecker(ConfigChecker&&) noexcept;
  ConfigChecker& operator=(ConfigChecker&&) noexcept;

  // As validate_config_prefix(text). `text` must begin with the text given to the last call
  // (its first seen() bytes unchanged); after any other change, reset() first.
  Validation append(std::string_view text);
  // As validate_config(text), for the text given to the last append().
  Validation complete(std::string_view text) const;
  // The size of the text given to the last append() (0 after reset()).
  std::size_t seen() const;
  void reset();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Is `text` a whole, plausible AWS config file?
Validation validate_config(std::string_view text);

// Could `text` still become a valid config when more bytes are appended? Used to refuse a
// write as soon as it is certain to be invalid (binary data, an HTML page, a JSON object),
// while accepting any valid prefix (writers split a text into several writes).
Validation validate_config_prefix(std::string_view text);

}  // namespace irsafs
