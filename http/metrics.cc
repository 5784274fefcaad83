#include "http/metrics.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>

namespace irsafs {
namespace {

using json = nlohmann::ordered_json;

constexpr std::array<const char*, 4> kStates = {"empty", "fetching", "ready", "error"};
constexpr std::array<const char*, 4> kRoleStates = {"pending", "verified", "unverified", "permanent"};

// A sample value as the exposition format writes it: integers exactly, others in the shortest
// form that reads back to the same double.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::optional<double> numeric(const json& j) {
  if (j.is_number_unsigned()) return static_cast<double>(j.get<std::uint64_t>());
  if (j.is_number_integer()) return static_cast<double>(j.get<std::int64_t>());
  if (j.is_number_float()) return j.get<double>();
  if (j.is_boolean()) return j.get<bool>() ? 1.0 : 0.0;
  return std::nullopt;
}

std::optional<double> field(const json& status, const char* name) {
  if (!status.is_object()) return std::nullopt;
  const auto it = status.find(name);
  if (it == status.end()) return std::nullopt;
  return numeric(*it);
}

std::optional<double> nested(const json& status, const char* object, const char* name) {
  if (!status.is_object()) return std::nullopt;
  const auto it = status.find(object);
  if (it == status.end() || !it->is_object()) return std::nullopt;
  return field(*it, name);
}

// A time field: ISO-8601 string or Unix seconds; null (never) is 0, as Prometheus' own
// *_timestamp_seconds do; absent or unreadable is nullopt.
std::optional<double> timestamp(const json& status, const char* name) {
  if (!status.is_object()) return std::nullopt;
  const auto it = status.find(name);
  if (it == status.end()) return std::nullopt;
  if (it->is_null()) return 0.0;
  if (it->is_string()) return parse_iso8601_utc(it->get_ref<const std::string&>());
  return numeric(*it);
}

std::string label_value(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(std::string_view name, double value, std::string_view label = {}, std::string_view label_val = {}) {
    out_ += name;
    if (!label.empty()) {
      out_ += '{';
      out_ += label;
      out_ += "=\"";
      out_ += label_value(label_val);
      out_ += "\"}";
    }
    out_ += ' ';
    out_ += number(value);
    out_ += '\n';
  }
  // A sample with two labels.
  void sample2(std::string_view name, double value, std::string_view l1, std::string_view v1, std::string_view l2,
               std::string_view v2) {
    out_ += name;
    out_ += '{';
    out_ += l1;
    out_ += "=\"";
    out_ += label_value(v1);
    out_ += "\",";
    out_ += l2;
    out_ += "=\"";
    out_ += label_value(v2);
    out_ += "\"} ";
    out_ += number(value);
    out_ += '\n';
  }
  void single(std::string_view name, std::string_view type, std::string_view help, std::optional<double> v) {
    if (!v) return;
    family(name, type, help);
    sample(name, *v);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

std::optional<double> parse_iso8601_utc(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)
  auto digits = [&](std::size_t pos, std::size_t n, int& out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    out = v;
    return true;
  };
  int year, month, day, hour, minute, second;
  if (!digits(0, 4, year) || s.size() < 19 || s[4] != '-' || !digits(5, 2, month) || s[7] != '-' ||
      !digits(8, 2, day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(11, 2, hour) ||
      s[13] != ':' || !digits(14, 2, minute) || s[16] != ':' || !digits(17, 2, second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  std::size_t pos = 19;
  double fraction = 0;
  if (pos < s.size() && s[pos] == '.') {
    double scale = 0.1;
    ++pos;
    const std::size_t start = pos;
    for (; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, scale /= 10) fraction += (s[pos] - '0') * scale;
    if (pos == start) return std::nullopt;
  }
  const std::string_view zone = s.substr(pos);
  if (zone != "Z" && zone != "z" && zone != "+00:00") return std::nullopt;
  // Days from the civil date (Howard Hinnant's days_from_civil), so no timegm or time zone.
  const int y = year - (month <= 2 ? 1 : 0);
  const int era = (y >= 0 ? y : y - 399) / 400;
  const int yoe = y - era * 400;
  const int doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const long long days = static_cast<long long>(era) * 146097 + doe - 719468;
  return static_cast<double>(days * 86400 + hour * 3600 + minute * 60 + second) + fraction;
}

std::string render_metrics(const nlohmann::ordered_json& status) {
  Writer w;

  // --- counters ----------------------------------------------------------------------------
  const auto fetches = field(status, "fetches");
  const auto failures = field(status, "failures");
  std::optional<double> successes = field(status, "fetch_successes");
  if (!successes && fetches && failures) {
    // `fetches` counts fetches started, `failures` those that failed: the rest succeeded, but
    // for one still running.
    const bool fetching = status.is_object() && status.contains("state") && status["state"] == "fetching";
    const bool running = fetching || field(status, "refreshing").value_or(0) != 0;
    successes = std::max(0.0, *fetches - *failures - (running ? 1.0 : 0.0));
  }
  if (successes || failures) {
    w.family("irsafs_fetches_total", "counter", "Fetches of the AWS config from irsa-svc that ended, by outcome.");
    if (successes) w.sample("irsafs_fetches_total", *successes, "outcome", "success");
    if (failures) w.sample("irsafs_fetches_total", *failures, "outcome", "failure");
  }
  w.single("irsafs_upstream_requests_total", "counter", "Requests made to irsa-svc.",
           field(status, "upstream_requests"));
  w.single("irsafs_token_requests_total", "counter", "Requests made to the token endpoint.",
           field(status, "token_requests"));
  w.single("irsafs_peer_requests_total", "counter", "Requests made to the serving peer (--peer).",
           field(status, "peer_requests"));
  if (status.is_object() && status.contains("peers") && status["peers"].is_object()) {
    const json& p = status["peers"];
    w.single("irsafs_peer_served_requests_total", "counter", "GET /v1/config requests from peers (--serve-peers).",
             field(p, "requests"));
    if (p.contains("answers") && p["answers"].is_object() && !p["answers"].empty()) {
      w.family("irsafs_peer_answers_total", "counter", "Answers to peers (--serve-peers), by HTTP status.");
      for (const auto& [code, value] : p["answers"].items()) {
        if (const auto v = numeric(value)) w.sample("irsafs_peer_answers_total", *v, "status", code);
      }
    }
  }
  w.single("irsafs_fuse_requests_total", "counter",
           "FUSE requests about the file that reached the daemon (warm reads add none).",
           field(status, "fuse_requests"));
  const auto committed = nested(status, "writes", "committed");
  const auto rejected = nested(status, "writes", "rejected");
  if (committed || rejected) {
    w.family("irsafs_writes_total", "counter", "Write sessions (seeding by write) that ended, by outcome.");
    if (committed) w.sample("irsafs_writes_total", *committed, "outcome", "committed");
    if (rejected) w.sample("irsafs_writes_total", *rejected, "outcome", "rejected");
  }
  if (status.is_object() && status.contains("refreshes")) {
    const json& r = status["refreshes"];
    if (const auto n = numeric(r)) {
      w.single("irsafs_refreshes_total", "counter", "Refreshes requested (SIGHUP, /refresh, --refresh-interval).", n);
    } else if (r.is_object() && !r.empty()) {
      w.family("irsafs_refreshes_total", "counter", "Refreshes requested, by trigger.");
      for (const auto& [trigger, value] : r.items()) {
        if (const auto v = numeric(value)) w.sample("irsafs_refreshes_total", *v, "trigger", trigger);
      }
    }
  }

  // --- gauges ------------------------------------------------------------------------------
  if (status.is_object() && status.contains("state") && status["state"].is_string()) {
    const auto& current = status["state"].get_ref<const std::string&>();
    w.family("irsafs_state", "gauge", "The file's state: 1 for the current one.");
    for (const char* s : kStates) w.sample("irsafs_state", current == s ? 1 : 0, "state", s);
  }
  w.single("irsafs_refreshing", "gauge", "1 while a refresh runs with content served.", field(status, "refreshing"));
  w.single("irsafs_waiting_readers", "gauge", "Readers waiting for the content.", field(status, "waiting_readers"));
  w.single("irsafs_content_bytes", "gauge", "Size of the served content in bytes (0: none yet).",
           field(status, "bytes"));
  w.single("irsafs_content_version", "gauge", "Version of the served content (0: none yet).",
           field(status, "version"));
  w.single("irsafs_write_sessions_pending", "gauge", "Write sessions not yet committed.",
           nested(status, "writes", "pending"));
  const auto last_ms = field(status, "last_fetch_ms");
  w.single("irsafs_last_fetch_duration_seconds", "gauge", "Duration of the last fetch that ended.",
           last_ms ? std::optional<double>(*last_ms / 1000.0) : std::nullopt);
  w.single("irsafs_last_success_timestamp_seconds", "gauge",
           "Unix time of the last successful fetch (0: none yet).", timestamp(status, "last_success_at"));
  w.single("irsafs_last_error_timestamp_seconds", "gauge", "Unix time of the last failed fetch (0: none).",
           timestamp(status, "last_error_at"));
  w.single("irsafs_start_time_seconds", "gauge", "Unix time the daemon started.", timestamp(status, "started_at"));

  // --- role verification (verify/verifier.h) ------------------------------------------------
  if (status.is_object() && status.contains("verification") && status["verification"].is_object()) {
    const json& v = status["verification"];
    w.single("irsafs_role_verification_attempts_total", "counter",
             "AssumeRoleWithWebIdentity calls made to verify roles before releasing the config.",
             field(v, "attempts_total"));
    w.single("irsafs_role_verification_duration_seconds", "gauge",
             "How long the last role verification held the config back.", field(v, "total_seconds"));
    if (v.contains("roles") && v["roles"].is_array() && !v["roles"].empty()) {
      w.family("irsafs_role_verification", "gauge",
               "Each web-identity role of the last verification: 1 for its state, else 0.");
      for (const json& role : v["roles"]) {
        if (!role.is_object() || !role.contains("role_arn") || !role["role_arn"].is_string() ||
            !role.contains("state") || !role["state"].is_string()) {
          continue;
        }
        const auto& arn = role["role_arn"].get_ref<const std::string&>();
        const auto& state = role["state"].get_ref<const std::string&>();
        for (const char* s : kRoleStates) w.sample2("irsafs_role_verification", state == s ? 1 : 0, "role_arn", arn, "state", s);
      }
    }
  }
  return w.take();
}

}  // namespace irsafs
