// What the HTTP endpoints (http/server.h) ask of the daemon. The server knows nothing of FUSE,
// fetches or ConfigService: the daemon implements this on top of them, tests with a fake.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace irsafs {

// The answer to one /refresh request. The body never holds the token or the config text.
struct RefreshOutcome {
  int http_status = 200;  // 200; 409 on a mount seeded by a write; 5xx when the fetch failed
  std::string body;       // e.g. {"version":2,"changed":true,"bytes":123,"sha256":"..."}
  std::string content_type = "application/json";
};

// Called on the server's one thread (MHD's polling thread): every call must return at once —
// no network, no waiting for a fetch — or every client of the port waits with it.
class EndpointBackend {
 public:
  virtual ~EndpointBackend() = default;
  // The same JSON as .status (see README "Status": state, last_error, counters, ...).
  virtual nlohmann::ordered_json status() = 0;
  // The daemon runs and the mount is up (not whether irsa-svc answers: liveness must not flap
  // with it).
  virtual bool live() = 0;
  // Fetches again now, like SIGHUP, or joins the refresh that runs. `done` is called exactly
  // once with the outcome, from any thread, possibly before refresh() returns. `done` only
  // wakes the server's thread and never calls back into the backend, so it may be called with
  // the backend's locks held.
  virtual void refresh(std::function<void(RefreshOutcome)> done) = 0;
};

}  // namespace irsafs
