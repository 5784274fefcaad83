// The command line of issue 14: a worker's --peer (and IRSAFS_PEER), --peer-fallback, the
// token and key flags shared with the head's authenticator, and the head's --serve-peers. cli.cc
// only adds the flags and calls these.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "app/options.h"
#include "auth/oidc_authenticator.h"
#include "common/clock.h"
#include "core/daemon.h"
#include "fetcher/peer_source.h"
#include "fetcher/source.h"
#include "http/listen.h"

namespace irsafs {

struct PeerArgs {
  std::optional<std::string> peer;              // --peer URL [env IRSAFS_PEER]
  std::string fallback = "none";                // --peer-fallback irsa-svc|none
  std::string token_file = kDefaultPeerTokenFile;  // --peer-token-file
  std::string audience = "irsafs";              // --peer-audience
  std::optional<std::string> jwks_file;         // --peer-jwks-file
  std::optional<std::string> ca_file;           // --peer-ca-file (OIDC discovery)
  std::optional<std::string> serve;             // --serve-peers ADDR:PORT (mount only)
};

// `serve`: also the head's flags (mount).
void add_peer_options(CLI::App& cmd, PeerArgs& args, bool serve);

// Where fetches go, resolved from the flags and the environment.
struct PeerPlan {
  std::optional<PeerSettings> peer;  // set: fetch from this peer
  bool fallback = false;             // then irsa-svc when the peer fails
  std::optional<ListenAddress> serve;
};
// Throws UsageError (exit 2) with one line for a bad URL, fallback or address.
PeerPlan resolve_peers(const PeerArgs& args, const ResolvedOptions& options, const EnvLookup& env);

// The source of `irsafs fetch` and of the mount: the peer when one is set (then `irsa_svc` when
// the peer fails, with --peer-fallback irsa-svc), else `irsa_svc`, the source built for
// irsa-svc itself (e.g. its Fetcher, verified).
SourceFactory peer_source_factory(const PeerPlan& plan, const ResolvedOptions& options, SourceFactory irsa_svc);

// The head's authenticator settings from the flags and env OIDC_PROVIDER.
PeerAuthSettings peer_auth_settings(const PeerArgs& args, const EnvLookup& env);

// --serve-peers: adds the peer endpoint and its authenticator (OidcAuthenticator) to `daemon`.
void add_peer_server(Daemon& daemon, const PeerPlan& plan, const PeerArgs& args);

}  // namespace irsafs
