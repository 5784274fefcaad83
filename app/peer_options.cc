#include "app/peer_options.h"

#include <spdlog/spdlog.h>

#include "app/peers.h"
#include "auth/oidc_authenticator.h"
#include "common/text.h"
#include "fetcher/curl_transport.h"

namespace irsafs {

void add_peer_options(CLI::App& cmd, PeerArgs& a, bool serve) {
  cmd.add_option("--peer", a.peer,
                 "Take the config from this serving peer (GET URL/v1/config) instead of irsa-svc [env IRSAFS_PEER]")
      ->type_name("URL");
  cmd.add_option("--peer-fallback", a.fallback,
                 "When the peer fails for the whole deadline: irsa-svc (one fetch from it) or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"irsa-svc", "none"}));
  cmd.add_option("--peer-token-file", a.token_file,
                 "Projected service-account token (audience --peer-audience) sent to the peer; the head reads "
                 "its own to learn its issuer and subject")
      ->capture_default_str()
      ->type_name("PATH");
  if (!serve) return;
  cmd.add_option("--serve-peers", a.serve,
                 "Serve GET /v1/config to peers of the same service account on ADDR:PORT (off by default)")
      ->type_name("ADDR:PORT");
  cmd.add_option("--peer-audience", a.audience, "Audience a peer's token must carry")->capture_default_str()
      ->type_name("AUD");
  cmd.add_option("--peer-jwks-file", a.jwks_file,
                 "The issuer's JWKS as a file [OIDC discovery at https://<issuer>/.well-known/openid-configuration]")
      ->type_name("PATH");
  cmd.add_option("--peer-ca-file", a.ca_file, "CA bundle for OIDC discovery [the system store]")->type_name("PATH");
}

PeerPlan resolve_peers(const PeerArgs& args, const ResolvedOptions& options, const EnvLookup& env) {
  PeerPlan plan;
  std::optional<std::string> url = args.peer;
  std::string from = "--peer";
  if (!url || url->empty()) {
    url = env("IRSAFS_PEER");
    from = "IRSAFS_PEER";
  }
  if (url && !url->empty()) {
    PeerSettings p;
    try {
      p.url = peer_config_url(*url);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string(e.what()) + " (from " + from + ")");
    }
    if (args.token_file.empty()) throw UsageError("--peer-token-file must name a file");
    p.token_file = args.token_file;
    p.deadline = options.fetch.deadline;
    p.retry = options.fetch.retry;
    plan.peer = std::move(p);
    plan.fallback = args.fallback == "irsa-svc";
  }
  if (args.serve && !args.serve->empty() && *args.serve != "none") {
    if (args.audience.empty()) throw UsageError("--peer-audience must not be empty");
    try {
      plan.serve = parse_listen_address(*args.serve, "--serve-peers");
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  return plan;
}

namespace {

std::unique_ptr<Transport> peer_transport(const ResolvedOptions& options) {
  TransportSettings t = options.transport;
  // A request may wait at the head while the head fetches: it may last the whole deadline; a
  // connection still has --timeout to come.
  t.connect_timeout = t.timeout;
  t.timeout = options.fetch.deadline;
  return std::make_unique<CurlTransport>(t);
}

}  // namespace

SourceFactory peer_source_factory(const PeerPlan& plan, const ResolvedOptions& options, SourceFactory irsa_svc) {
  if (!plan.peer) return irsa_svc;
  return [plan, options, irsa_svc = std::move(irsa_svc)](const SourceContext& ctx) -> std::unique_ptr<ConfigSource> {
    auto peer = std::make_unique<PeerSource>(*plan.peer, peer_transport(options), ctx.clock, ctx.random);
    if (!plan.fallback) return peer;
    return std::make_unique<FallbackSource>(std::move(peer), irsa_svc(ctx));
  };
}

namespace {

// The head's authenticator as a component: added before the peer endpoint, so it starts first
// (its loader thread, after daemonizing) and stops after the endpoint, whose stop() has then
// answered every request still waiting for it.
class PeerAuthComponent final : public Component {
 public:
  explicit PeerAuthComponent(const PeerAuthSettings& settings) : auth_(make_peer_authenticator(settings, clock_)) {}
  void start() override { auth_->start(); }
  void stop() override { auth_->stop(); }
  Authenticator& authenticator() { return *auth_; }

 private:
  SystemClock clock_;
  std::unique_ptr<OidcAuthenticator> auth_;
};

}  // namespace

PeerAuthSettings peer_auth_settings(const PeerArgs& args, const EnvLookup& env) {
  PeerAuthSettings s;
  s.audience = args.audience;
  s.token_file = args.token_file;
  s.jwks_file = args.jwks_file.value_or("");
  s.ca_file = args.ca_file.value_or("");
  s.oidc_provider = env("OIDC_PROVIDER").value_or("");
  return s;
}

void add_peer_server(Daemon& daemon, const PeerPlan& plan, const PeerArgs& args) {
  if (!plan.serve) return;
  auto auth = std::make_unique<PeerAuthComponent>(peer_auth_settings(args, process_environment()));
  Authenticator& checks = auth->authenticator();
  daemon.add(std::move(auth));
  HttpServerOptions o;
  o.address = *plan.serve;
  daemon.add(std::make_unique<PeersComponent>(daemon.service(), checks, o));
}

}  // namespace irsafs
