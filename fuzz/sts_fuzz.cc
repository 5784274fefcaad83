// libFuzzer target for verify/: STS's answers (verify/sts.cc, parsed with pugixml) and the config
// reader that picks the roles to verify (verify/profiles.cc). No crash, no sanitizer report, and
// on any input:
//   - the body is wiped whole after judging (credentials never outlive the parse);
//   - the message and code are valid UTF-8, one line, at most 200 bytes, and never quote the
//     AccessKeyId / SecretAccessKey of a success;
//   - success only for HTTP 200;
//   - every role found has a role ARN and a token file, and no (ARN, file) pair twice.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "common/text.h"
#include "verify/profiles.h"
#include "verify/sts.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

void check_text(const std::string& s) {
  if (s.size() > 200) fail("message longer than 200 bytes");
  if (irsafs::invalid_utf8_at(s)) fail("message not UTF-8");
  if (s.find_first_of("\r\n") != std::string::npos) fail("message of several lines");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte picks the status; the rest is the body.
  static constexpr long kStatuses[] = {200, 400, 403, 429, 500, 503, 302, 404};
  const long status = kStatuses[data[0] % 8];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  std::string body(input);
  const char* buffer = body.data();
  const std::size_t capacity = body.capacity();
  const irsafs::StsAnswer a = irsafs::judge_sts_body(status, body);
  if (!body.empty()) fail("body not emptied");
  for (std::size_t i = 0; i < capacity; ++i) {
    if (buffer[i] != 0) fail("body not wiped");
  }
  check_text(a.message);
  check_text(a.code);
  if (a.verdict == irsafs::StsVerdict::kSuccess && status != 200) fail("success with a status other than 200");
  if (a.verdict == irsafs::StsVerdict::kSuccess && !a.message.empty()) fail("a success with a message");

  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& r : irsafs::web_identity_roles(input)) {
    if (r.role_arn.empty() || r.token_file.empty() || r.profiles.empty()) fail("incomplete role");
    if (!seen.emplace(r.role_arn, r.token_file).second) fail("role twice");
  }
  return 0;
}
