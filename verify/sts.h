// AWS STS as irsafs asks it: AssumeRoleWithWebIdentity, unsigned, the way botocore calls it, to
// learn whether a role's trust policy lets this pod's service account in yet. The credentials in
// a successful answer are never kept: the answer is parsed in place and wiped at once.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/secret.h"
#include "fetcher/transport.h"

namespace irsafs {

// The STS endpoint: `flag` (--sts-endpoint) when given; else AWS_ENDPOINT_URL_STS (what newer
// SDKs honour); else regional https://sts.<region>.<partition domain> for AWS_REGION or
// AWS_DEFAULT_REGION, except with AWS_STS_REGIONAL_ENDPOINTS=legacy in a region botocore sends
// to the global endpoint; else the global https://sts.amazonaws.com. Throws
// std::invalid_argument for a region that cannot be part of a host name.
using StsEnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
std::string resolve_sts_endpoint(const std::optional<std::string>& flag, const StsEnvLookup& env);

// The form body of the request (botocore's, DurationSeconds=900, the shortest allowed). The
// token is percent-encoded into a buffer sized up front, so no partial copy of it is left in a
// freed buffer; the caller wipes the result.
std::string assume_role_body(std::string_view role_arn, std::string_view session_name, const Secret& token);

// What an STS answer means for verification.
enum class StsVerdict {
  kSuccess,        // AssumeRoleWithWebIdentityResponse with credentials
  kNotPropagated,  // AccessDenied "Not authorized to perform sts:AssumeRoleWithWebIdentity"
  kTransient,      // throttling, 5xx, IDPCommunicationError, "Couldn't retrieve verification key"
  kUnreachable,    // no answer: name resolution, connection refused or timed out
  kPermanent,      // anything else: wrong audience, no such provider, expired token, bad ARN...
  kCancelled,
};
const char* to_string(StsVerdict v);

struct StsAnswer {
  StsVerdict verdict = StsVerdict::kPermanent;
  std::string code;     // STS's error code ("AccessDenied"), or ours in brackets-free CamelCase
                        // for what is not STS's ("Unreachable", "MalformedResponse", ...)
  std::string message;  // one line, printable, at most 200 bytes; never credentials
  long status = 0;
  std::optional<Duration> retry_after;
};

// Judges a response to AssumeRoleWithWebIdentity and wipes its body (the credentials) before
// returning, whatever it held. The body is parsed with pugixml, in place (the document's strings
// point into the body, so wiping the body wipes them).
StsAnswer judge_sts_response(HttpResponse& response);

// The body alone (status 200 unless told): for tests and the fuzzer. Wipes `body`.
StsAnswer judge_sts_body(long status, std::string& body);

}  // namespace irsafs
