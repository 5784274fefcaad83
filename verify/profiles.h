// Which roles the served config makes clients assume with a web identity: every profile that has
// both web_identity_token_file and role_arn, the first hop of each chain (the hop whose trust
// policy irsa-svc changes). Read the way botocore reads the file (configparser sections, [DEFAULT]
// values inherited, "[profile NAME]" and "[default]" are profiles, other sections are not).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace irsafs {

struct WebIdentityRole {
  std::string role_arn;
  std::string token_file;
  std::vector<std::string> profiles;  // the profiles naming this (role_arn, token_file)
};

// One entry per distinct (role_arn, token_file), in the order of their first profile. The text
// is normally validated already (common/validator.h); anything else is read leniently: lines that
// are neither headers nor options are skipped, never an error.
std::vector<WebIdentityRole> web_identity_roles(std::string_view config);

}  // namespace irsafs
