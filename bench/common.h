// What the benchmark programs share: fatal errors, percentiles and command-line parsing (CLI11,
// as irsafs itself). A usage error exits 2 with CLI11's message; --help exits 0.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>  // program_invocation_short_name (glibc)
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

namespace bench {

[[noreturn]] inline void die(const std::string& why) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, why.c_str());
  std::exit(2);
}

// Parses argv into `app`; on --help prints the help and exits 0, on a usage error exits 2.
inline void parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    std::exit(code == 0 ? 0 : 2);
  }
}

// A check for counts and sizes: 1 or more.
inline CLI::Range positive() { return CLI::Range(1, std::numeric_limits<int>::max(), "POSITIVE"); }

// The p-th percentile (0..100) of v, interpolated between the closest ranks; 0 when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

}  // namespace bench
