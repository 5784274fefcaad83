// Where a fetch of the config comes from. The daemon's fetch thread asks a ConfigSource and
// knows nothing else: irsa-svc itself (fetcher.h), and sources that wrap or replace it plug in
// here without the core knowing which one it runs.
#pragma once

#include <stop_token>

#include "fetcher/result.h"

namespace irsafs {

class ConfigSource {
 public:
  virtual ~ConfigSource() = default;
  // Blocks until success, a permanent failure, the source's deadline, or `stop`.
  virtual FetchResult fetch(std::stop_token stop = {}) = 0;
};

}  // namespace irsafs
