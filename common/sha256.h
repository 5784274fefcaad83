// The sha256 of the config: .status shows it, and the peer endpoint's ETag is it.
#pragma once

#include <string>
#include <string_view>

namespace irsafs {

// Lower-case hex.
std::string sha256_hex(std::string_view data);

}  // namespace irsafs
