#include "http/conditional.h"

namespace irsafs {

bool if_none_match_matches(std::string_view header, std::string_view tag) {
  std::size_t pos = 0;
  while (pos < header.size()) {
    const std::size_t comma = header.find(',', pos);
    std::string_view item = header.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    pos = comma == std::string_view::npos ? header.size() : comma + 1;
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item == "*") return true;
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item.size() == tag.size() + 2 && item.front() == '"' && item.back() == '"' &&
        item.substr(1, tag.size()) == tag) {
      return true;
    }
  }
  return false;
}

}  // namespace irsafs
