#include "app/verify_setup.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>

#include "common/text.h"

namespace irsafs {

void add_verify_options(CLI::App& cmd, VerifyArgs& args) {
  cmd.add_option("--verify-roles", args.mode,
                 "Before releasing a fetched config, assume each web-identity role with STS until IAM "
                 "lets it in: on, off, or auto (on when a profile's token file is readable)")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off", "auto"}));
  cmd.add_option("--sts-endpoint", args.sts_endpoint,
                 "STS URL for --verify-roles [env AWS_ENDPOINT_URL_STS; else regional from AWS_REGION / "
                 "AWS_DEFAULT_REGION; else https://sts.amazonaws.com]")
      ->type_name("URL");
  cmd.add_option("--verify-token-file", args.token_file,
                 "Read the web-identity token for --verify-roles from PATH instead of the file each profile "
                 "names (a sidecar that mounts the workload's token elsewhere)")
      ->type_name("PATH");
}

VerifyPlan resolve_verify(const VerifyArgs& args, const ResolvedOptions& options, const EnvLookup& env) {
  VerifyPlan plan;
  VerifySettings& s = plan.settings;
  if (args.mode == "on") {
    s.mode = VerifyMode::kOn;
  } else if (args.mode == "off") {
    s.mode = VerifyMode::kOff;
  } else if (args.mode == "auto") {
    s.mode = VerifyMode::kAuto;
  } else {
    throw UsageError("--verify-roles must be on, off or auto, not '" + printable(args.mode, 64) + "'");
  }
  s.token_file = args.token_file;
  if (args.sts_endpoint) {
    const std::string& e = *args.sts_endpoint;
    if (invalid_utf8_at(e) || !(e.starts_with("http://") || e.starts_with("https://")) || e.size() <= 8) {
      throw UsageError("--sts-endpoint must be an http:// or https:// URL, not '" + printable(e, 128) + "'");
    }
  }
  try {
    // Off: the environment's region is none of irsafs' business, however odd.
    if (s.mode != VerifyMode::kOff) s.endpoint = resolve_sts_endpoint(args.sts_endpoint, env);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  s.deadline = options.fetch.deadline;
  // A margin that keeps short test deadlines useful: 1 s, or a twentieth of a short deadline.
  s.margin = std::clamp<Duration>(options.fetch.deadline / 20, std::chrono::milliseconds(200), std::chrono::seconds(1));
  // STS is not irsa-svc: the system's trust store (or the SDK's AWS_CA_BUNDLE), never --insecure.
  if (auto bundle = env("AWS_CA_BUNDLE"); bundle && !bundle->empty()) plan.sts_transport.tls.ca_file = *bundle;
  // One request no longer than the unreachable give-up, so a silent STS is noticed in time.
  plan.sts_transport.timeout = std::min<Duration>(options.transport.timeout, s.unreachable_give_up);
  plan.sts_transport.max_body = 64 * 1024;  // an answer is about 1.5 KiB
  plan.describe = std::string("role verification ") + to_string(s.mode) +
                  (s.mode == VerifyMode::kOff ? "" : " (STS " + s.endpoint + ")");
  return plan;
}

std::unique_ptr<ConfigSource> verifying_source(std::unique_ptr<ConfigSource> inner, const VerifyPlan& plan,
                                               Clock& clock, Random& random,
                                               std::shared_ptr<VerificationReport> report) {
  if (report) report->configure(plan.settings.mode, plan.settings.endpoint);
  if (plan.settings.mode == VerifyMode::kOff) return inner;
  return std::make_unique<RoleVerifier>(std::move(inner), std::make_unique<CurlTransport>(plan.sts_transport),
                                        plan.settings, clock, random, std::move(report));
}

SourceFactory verifying_source_factory(VerifyPlan plan, std::shared_ptr<VerificationReport> report) {
  return [plan = std::move(plan), report = std::move(report)](const SourceContext& ctx) {
    return verifying_source(std::make_unique<Fetcher>(ctx.fetch, ctx.transport, ctx.clock, ctx.random), plan,
                            ctx.clock, ctx.random, report);
  };
}

void show_verification(ConfigService& service, std::shared_ptr<VerificationReport> report) {
  service.set_status_extras("verify", [report = std::move(report)](nlohmann::ordered_json& status) {
    status["verification"] = report->to_json();
  });
}

}  // namespace irsafs
