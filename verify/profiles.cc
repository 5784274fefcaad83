#include "verify/profiles.h"

#include <map>
#include <optional>
#include <utility>

namespace irsafs {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == '\n'; }

std::string_view strip(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// The profile a section defines in a config file (botocore's build_profile_map): "default", or
// the name after "profile " (quotes around it removed, as shlex would); nullopt for others
// ("sso-session x", "services x", a bare "x").
std::optional<std::string> profile_of(std::string_view section) {
  if (section == "default") return std::string(section);
  if (section.substr(0, 7) != "profile") return std::nullopt;
  std::string_view rest = section.substr(7);
  if (rest.empty() || !is_space(rest.front())) return std::nullopt;
  rest = strip(rest);
  if (rest.size() >= 2 && (rest.front() == '"' || rest.front() == '\'') && rest.back() == rest.front()) {
    rest = rest.substr(1, rest.size() - 2);
  }
  if (rest.empty()) return std::nullopt;
  return std::string(rest);
}

using Options = std::map<std::string, std::string, std::less<>>;

}  // namespace

std::vector<WebIdentityRole> web_identity_roles(std::string_view config) {
  // Sections in file order with their options; DEFAULT apart. A repeated section merges (the
  // validator refuses it; botocore would fail, so nothing here matters much).
  std::vector<std::pair<std::string, Options>> sections;
  std::map<std::string, std::size_t, std::less<>> index;
  Options defaults;
  Options* current = nullptr;
  bool in_option = false;
  std::size_t option_indent = 0;

  std::size_t pos = 0;
  while (pos <= config.size()) {
    std::size_t eol = config.find_first_of("\r\n", pos);
    if (eol == std::string_view::npos) eol = config.size();
    const std::string_view raw = config.substr(pos, eol - pos);
    pos = eol + 1;
    if (eol < config.size() && config[eol] == '\r' && pos < config.size() && config[pos] == '\n') ++pos;
    if (eol == config.size()) pos = config.size() + 1;

    std::size_t indent = 0;
    while (indent < raw.size() && is_space(raw[indent])) ++indent;
    const std::string_view body = strip(raw);
    if (body.empty() || body.front() == '#' || body.front() == ';') continue;
    // A continuation of the current option's value: never one of the two settings read here.
    if (current != nullptr && in_option && indent > option_indent) continue;
    if (body.front() == '[') {
      const std::size_t close = body.rfind(']');
      if (close != std::string_view::npos && close >= 2) {
        const std::string_view name = body.substr(1, close - 1);
        if (name == "DEFAULT") {
          current = &defaults;
        } else {
          auto it = index.find(name);
          if (it == index.end()) {
            it = index.emplace(std::string(name), sections.size()).first;
            sections.emplace_back(std::string(name), Options{});
          }
          current = &sections[it->second].second;
        }
        in_option = false;
        continue;
      }
    }
    const std::size_t delim = body.find_first_of("=:");
    if (current == nullptr || delim == std::string_view::npos || delim == 0) {
      in_option = false;
      continue;
    }
    current->insert_or_assign(lower(strip(body.substr(0, delim))), std::string(strip(body.substr(delim + 1))));
    in_option = true;
    option_indent = indent;
  }

  std::vector<WebIdentityRole> roles;
  std::map<std::pair<std::string, std::string>, std::size_t> seen;
  const auto value = [&defaults](const Options& o, std::string_view key) -> std::string {
    if (auto it = o.find(key); it != o.end()) return it->second;
    if (auto it = defaults.find(key); it != defaults.end()) return it->second;
    return {};
  };
  for (const auto& [section, options] : sections) {
    const std::optional<std::string> profile = profile_of(section);
    if (!profile) continue;
    std::string arn = value(options, "role_arn");
    std::string file = value(options, "web_identity_token_file");
    if (arn.empty() || file.empty()) continue;
    auto key = std::make_pair(arn, file);
    if (auto it = seen.find(key); it != seen.end()) {
      roles[it->second].profiles.push_back(*profile);
      continue;
    }
    seen.emplace(std::move(key), roles.size());
    roles.push_back({std::move(arn), std::move(file), {*profile}});
  }
  return roles;
}

}  // namespace irsafs
