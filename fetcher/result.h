// The outcome of one fetch of the config, whatever its source (source.h).
#pragma once

#include <string>

#include "common/clock.h"

namespace irsafs {

// Where a fetch's content came from.
enum class FetchOrigin { kIrsaSvc, kPeer };

struct FetchResult {
  bool ok = false;
  bool cancelled = false;
  std::string content;  // the validated config when ok
  std::string error;    // why it failed, one line, never the token or the content
  int attempts = 0;     // rounds of token + POST
  int requests = 0;     // POSTs that reached irsa-svc (or tried to)
  int token_requests = 0;
  int peer_requests = 0;  // GETs to a serving peer (fetcher/peer_source.h)
  FetchOrigin origin = FetchOrigin::kIrsaSvc;  // of `content`
  Duration elapsed{};
};

}  // namespace irsafs
