#include "verify/sts.h"

#include <pugixml.hpp>

#include <algorithm>
#include <array>
#include <stdexcept>

#include "common/text.h"

namespace irsafs {
namespace {

constexpr std::string_view kGlobalEndpoint = "https://sts.amazonaws.com";

// The regions botocore 1.29 sends to the global endpoint when AWS_STS_REGIONAL_ENDPOINTS=legacy
// (botocore/data/endpoints.json, "sts" with credentialScope us-east-1).
constexpr std::array<std::string_view, 16> kLegacyGlobalRegions = {
    "ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "aws-global", "ca-central-1",
    "eu-central-1",   "eu-north-1", "eu-west-1",      "eu-west-2",      "eu-west-3",  "sa-east-1",
    "us-east-1",      "us-east-2",  "us-west-1",      "us-west-2"};

std::optional<std::string> non_empty(std::optional<std::string> v) {
  if (v && v->empty()) return std::nullopt;
  return v;
}

std::string partition_domain(std::string_view region) {
  if (region.starts_with("cn-")) return "amazonaws.com.cn";
  if (region.starts_with("us-isob-")) return "sc2s.sgov.gov";
  if (region.starts_with("us-iso-")) return "c2s.ic.gov";
  return "amazonaws.com";  // aws and aws-us-gov
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == '~';
}

void append_encoded(std::string& out, std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (unreserved(c)) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

std::string_view local_name(const pugi::xml_node& n) {
  std::string_view name = n.name();
  if (const std::size_t colon = name.find(':'); colon != std::string_view::npos) name.remove_prefix(colon + 1);
  return name;
}

pugi::xml_node child(const pugi::xml_node& parent, std::string_view name) {
  for (pugi::xml_node c = parent.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element && local_name(c) == name) return c;
  }
  return {};
}

std::string one_line(std::string_view text) {
  const std::string out = printable(text, 197);  // "..." marks a cut
  const auto first = out.find_first_not_of(' ');
  if (first == std::string::npos) return {};
  return out.substr(first, out.find_last_not_of(' ') - first + 1);
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

StsAnswer classify_error(long status, std::string code, std::string message) {
  StsAnswer a;
  a.status = status;
  a.code = std::move(code);
  a.message = one_line(message);  // composed messages too: one line, at most 200 bytes
  const std::string_view c = a.code;
  if (c == "AccessDenied" && contains(a.message, "sts:AssumeRoleWithWebIdentity")) {
    a.verdict = StsVerdict::kNotPropagated;
  } else if ((c == "InvalidIdentityToken" && contains(a.message, "verification key")) ||
             c == "IDPCommunicationError" || c == "Throttling" || c == "ThrottlingException" ||
             c == "ThrottledException" || c == "RequestLimitExceeded" || c == "TooManyRequestsException" ||
             c == "RequestThrottled" || c == "RequestThrottledException" || c == "SlowDown" ||
             c == "PriorRequestNotComplete" || c == "ServiceUnavailable" || c == "InternalFailure" ||
             c == "InternalError" || c == "RequestTimeout" || c == "RequestTimeoutException" || status == 429 ||
             status == 408 || (status >= 500 && status <= 599)) {
    a.verdict = StsVerdict::kTransient;
  } else {
    a.verdict = StsVerdict::kPermanent;
  }
  return a;
}

}  // namespace

const char* to_string(StsVerdict v) {
  switch (v) {
    case StsVerdict::kSuccess: return "success";
    case StsVerdict::kNotPropagated: return "not-propagated";
    case StsVerdict::kTransient: return "transient";
    case StsVerdict::kUnreachable: return "unreachable";
    case StsVerdict::kPermanent: return "permanent";
    case StsVerdict::kCancelled: return "cancelled";
  }
  return "?";
}

std::string resolve_sts_endpoint(const std::optional<std::string>& flag, const StsEnvLookup& env) {
  if (auto f = non_empty(flag)) return *f;
  if (auto e = non_empty(env("AWS_ENDPOINT_URL_STS"))) return *e;
  std::optional<std::string> region = non_empty(env("AWS_REGION"));
  if (!region) region = non_empty(env("AWS_DEFAULT_REGION"));
  if (!region) return std::string(kGlobalEndpoint);
  const std::string& r = *region;
  if (r.size() > 63 || r.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos ||
      r.front() == '-' || r.back() == '-') {
    throw std::invalid_argument("Cannot use the AWS region '" + printable(r, 64) +
                                "' (AWS_REGION / AWS_DEFAULT_REGION) in the STS endpoint's host name");
  }
  const std::optional<std::string> mode = env("AWS_STS_REGIONAL_ENDPOINTS");
  if (mode && *mode == "legacy" &&
      std::find(kLegacyGlobalRegions.begin(), kLegacyGlobalRegions.end(), r) != kLegacyGlobalRegions.end()) {
    return std::string(kGlobalEndpoint);
  }
  if (r == "aws-global") return std::string(kGlobalEndpoint);
  return "https://sts." + r + "." + partition_domain(r);
}

std::string assume_role_body(std::string_view role_arn, std::string_view session_name, const Secret& token) {
  static constexpr std::string_view kHead = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=";
  static constexpr std::string_view kSession = "&RoleSessionName=";
  static constexpr std::string_view kToken = "&WebIdentityToken=";
  static constexpr std::string_view kTail = "&DurationSeconds=900";
  std::string body;
  body.reserve(kHead.size() + 3 * role_arn.size() + kSession.size() + 3 * session_name.size() + kToken.size() +
               3 * token.reveal().size() + kTail.size() + 1);
  body.append(kHead);
  append_encoded(body, role_arn);
  body.append(kSession);
  append_encoded(body, session_name);
  body.append(kToken);
  append_encoded(body, token.reveal());
  body.append(kTail);
  return body;
}

StsAnswer judge_sts_body(long status, std::string& body) {
  // Wiped on every way out: a success holds credentials, an error page may echo the request.
  struct Wipe {
    std::string& s;
    ~Wipe() { Secret::wipe_string(s); }
  } wipe{body};

  pugi::xml_document doc;
  // In place, UTF-8 forced: no converted copy of the text is made, the nodes point into `body`.
  const pugi::xml_parse_result parsed =
      doc.load_buffer_inplace(body.data(), body.size(), pugi::parse_default, pugi::encoding_utf8);
  const pugi::xml_node root = doc.document_element();
  if (parsed && root) {
    const std::string_view name = local_name(root);
    if (name == "AssumeRoleWithWebIdentityResponse" && status == 200) {
      const pugi::xml_node creds = child(child(root, "AssumeRoleWithWebIdentityResult"), "Credentials");
      if (creds && !std::string_view(child(creds, "AccessKeyId").text().get()).empty()) {
        StsAnswer a;
        a.verdict = StsVerdict::kSuccess;
        a.status = status;
        return a;
      }
      StsAnswer a = classify_error(status, "MalformedResponse", "an AssumeRoleWithWebIdentityResponse without credentials");
      a.verdict = StsVerdict::kPermanent;
      return a;
    }
    pugi::xml_node error = child(root, "Error");
    if (!error && name == "Response") error = child(child(root, "Errors"), "Error");
    if ((name == "ErrorResponse" || name == "Response") && error) {
      std::string code = one_line(child(error, "Code").text().get());
      std::string message = one_line(child(error, "Message").text().get());
      if (code.empty()) code = "UnknownError";
      return classify_error(status, std::move(code), std::move(message));
    }
  }
  // Not an STS document: an HTML page from a proxy, a truncated or malformed answer. Retried
  // when the status says the server is in trouble, else final.
  const std::string why = parsed ? (root ? "HTTP " + std::to_string(status) + " with an unexpected XML document <" +
                                               one_line(local_name(root)) + ">"
                                         : "HTTP " + std::to_string(status) + " with no XML element")
                                 : "HTTP " + std::to_string(status) + " with a body that is not XML (" +
                                       parsed.description() + " at byte " + std::to_string(parsed.offset + 1) + ")";
  StsAnswer a = classify_error(status, "MalformedResponse", why);
  return a;
}

StsAnswer judge_sts_response(HttpResponse& response) {
  using Outcome = HttpResponse::Outcome;
  struct Wipe {
    std::string& s;
    ~Wipe() { Secret::wipe_string(s); }
  } wipe{response.body};
  StsAnswer a;
  a.status = response.status;
  switch (response.outcome) {
    case Outcome::kCancelled:
      a.verdict = StsVerdict::kCancelled;
      a.code = "Cancelled";
      return a;
    case Outcome::kTransportError:
      // A certificate that does not verify or a bad URL will not mend by waiting; the rest (no
      // name, refused, timed out, reset) means STS cannot be reached from here.
      a.verdict = response.permanent ? StsVerdict::kPermanent : StsVerdict::kUnreachable;
      a.code = response.permanent ? "TransportError" : "Unreachable";
      a.message = one_line(response.error);
      return a;
    case Outcome::kTooLarge: {
      StsAnswer t = classify_error(response.status, "ResponseTooLarge", one_line(response.error));
      return t;
    }
    case Outcome::kCompleted:
      break;
  }
  StsAnswer judged = judge_sts_body(response.status, response.body);
  if (judged.verdict == StsVerdict::kTransient && response.retry_after && *response.retry_after > Duration::zero()) {
    judged.retry_after = response.retry_after;
  }
  return judged;
}

}  // namespace irsafs
