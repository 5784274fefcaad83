// A string that holds a credential: not printable, not copyable, wiped when dropped.
#pragma once

#include <cstring>
#include <string>
#include <string_view>

namespace irsafs {

class Secret {
 public:
  Secret() = default;
  // Takes the value's buffer and wipes what the moved-from string keeps: a short value lives in
  // the string object itself (the small-string buffer), which a move copies and leaves behind.
  explicit Secret(std::string&& value) noexcept : value_(std::move(value)) { wipe_string(value); }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      wipe();
      value_ = std::move(other.value_);
      other.wipe();
    }
    return *this;
  }
  ~Secret() { wipe(); }

  // The only way to the value; callers must not copy it into logs or messages.
  std::string_view reveal() const { return value_; }
  bool empty() const { return value_.empty(); }

  void wipe() { wipe_string(value_); }

  // Zeroes all of a string's buffer (its capacity, not only its size) and empties it.
  static void wipe_string(std::string& s) {
    // volatile writes so the compiler cannot drop them as dead stores.
    volatile char* p = s.data();
    for (std::size_t i = 0; i < s.capacity(); ++i) p[i] = 0;
    s.clear();
  }

 private:
  std::string value_;
};

}  // namespace irsafs
