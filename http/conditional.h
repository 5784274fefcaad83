// Conditional requests (RFC 9110 13.1.2): the peer endpoint answers 304 when a worker's
// If-None-Match names the content it serves.
#pragma once

#include <string_view>

namespace irsafs {

// Whether the If-None-Match value `header` names the entity tag whose opaque value is `tag`
// (the tag without its quotes): "*", or a comma-separated list of entity tags compared weakly
// ("W/" ignored). Anything malformed matches nothing.
bool if_none_match_matches(std::string_view header, std::string_view tag);

}  // namespace irsafs
