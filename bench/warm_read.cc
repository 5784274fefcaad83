// Warm read loop: open + read(4 KiB) + close of the mounted file against the same bytes on
// tmpfs, with T threads, in interleaved rounds (A B, B A, A B, ...) so that both targets see
// the same machine noise. Prints one JSON object on stdout.
//
//   bench_warm_read --target irsafs=/mnt/config --target tmpfs=/dev/shm/config
//                   [--threads 1] [--rounds 10] [--round-ms 500] [--bytes 4096]
//   bench_warm_read --target irsafs=/mnt/config --count 1000000 [--threads 1]
//       (a fixed number of reads of the first target, for the footprint check)
//
// Every read is checked: it must return exactly the file's size (the first read of each
// target sets the expected bytes, and all targets must hold the same bytes).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Target {
  std::string name;
  std::string path;
};

using bench::die;

std::string read_whole(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path + ": " + std::strerror(errno));
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) die("cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

struct Shared {
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0};
};

// One thread's loop: until stop (or `count` reads when count > 0). Returns the reads done.
long loop(const std::string& path, size_t expected, size_t bytes, Shared& s, long count) {
  std::vector<char> buf(bytes);
  while (!s.go.load(std::memory_order_acquire)) {
  }
  long ops = 0;
  while (count > 0 ? ops < count : !s.stop.load(std::memory_order_relaxed)) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      s.bad.fetch_add(1);
      continue;
    }
    const ssize_t n = ::read(fd, buf.data(), bytes);
    ::close(fd);
    if (n != static_cast<ssize_t>(std::min(expected, bytes))) s.bad.fetch_add(1);
    ++ops;
  }
  return ops;
}

struct RoundResult {
  long ops = 0;
  double seconds = 0;
  long bad = 0;
};

RoundResult run(const Target& t, size_t expected, size_t bytes, int threads, int round_ms, long count) {
  Shared s;
  std::vector<long> ops(static_cast<size_t>(threads), 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] { ops[static_cast<size_t>(i)] = loop(t.path, expected, bytes, s, count); });
  }
  const auto start = Clock::now();
  s.go.store(true, std::memory_order_release);
  if (count == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(round_ms));
    s.stop.store(true);
  }
  for (auto& th : pool) th.join();
  RoundResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (long o : ops) r.ops += o;
  r.bad = s.bad.load();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Target> targets;
  std::vector<std::string> target_args;
  int threads = 1, rounds = 10, round_ms = 500;
  size_t bytes = 4096;
  long count = 0;
  CLI::App app{"Warm open+read+close loop over files with the same bytes; prints one JSON object"};
  app.add_option("--target", target_args, "NAME=PATH (repeat; the first one alone with --count)")->required();
  app.add_option("--threads", threads)->check(bench::positive());
  app.add_option("--rounds", rounds)->check(bench::positive());
  app.add_option("--round-ms", round_ms)->check(bench::positive());
  app.add_option("--bytes", bytes, "bytes per read()")->check(bench::positive());
  app.add_option("--count", count, "a fixed number of reads of the first target instead of rounds");
  bench::parse(app, argc, argv);
  for (const auto& v : target_args) {
    const auto eq = v.find('=');
    if (eq == std::string::npos) die("--target NAME=PATH");
    targets.push_back({v.substr(0, eq), v.substr(eq + 1)});
  }

  // Warm every target and check they hold the same bytes.
  const std::string first = read_whole(targets[0].path);
  for (const auto& t : targets) {
    if (read_whole(t.path) != first) die(t.path + " does not hold the same bytes as " + targets[0].path);
  }
  const size_t expected = first.size();

  if (count > 0) {
    const long per_thread = (count + threads - 1) / threads;
    const RoundResult r = run(targets[0], expected, bytes, threads, 0, per_thread);
    std::printf("{\"target\": \"%s\", \"threads\": %d, \"ops\": %ld, \"seconds\": %.6f, \"bad\": %ld}\n",
                targets[0].name.c_str(), threads, r.ops, r.seconds, r.bad);
    return r.bad == 0 ? 0 : 1;
  }

  long bad = 0;
  std::printf("{\"threads\": %d, \"bytes\": %zu, \"file_size\": %zu, \"round_ms\": %d, \"rounds\": [", threads,
              bytes, expected, round_ms);
  for (int round = 0; round < rounds; ++round) {
    std::printf("%s\n  {", round == 0 ? "" : ",");
    for (size_t k = 0; k < targets.size(); ++k) {
      // Alternate the order every round so neither target always runs first.
      const size_t idx = (round % 2 == 0) ? k : targets.size() - 1 - k;
      const RoundResult r = run(targets[idx], expected, bytes, threads, round_ms, 0);
      bad += r.bad;
      std::printf("%s\"%s\": {\"ops\": %ld, \"seconds\": %.6f, \"ops_per_s\": %.1f}", k == 0 ? "" : ", ",
                  targets[idx].name.c_str(), r.ops, r.seconds, static_cast<double>(r.ops) / r.seconds);
    }
    std::printf("}");
    std::fflush(stdout);
  }
  std::printf("\n], \"bad_reads\": %ld}\n", bad);
  return bad == 0 ? 0 : 1;
}
