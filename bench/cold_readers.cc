// R concurrent cold readers of one file: R threads (small stacks) are created, wait on one
// flag, and are released together; each opens the file, reads to EOF, closes, and records
// its latency. While they run, the main thread samples a daemon's /proc/PID/status (Threads,
// VmRSS) every millisecond or so. Prints one JSON object on stdout.
//
//   bench_cold_readers --path /mnt/config --readers 1000 [--sample-pid PID] [--expect-bytes N]
//
// Latencies: "from_go" (release of all readers -> last byte) and "from_open" (this reader's
// open() call -> last byte), in milliseconds.
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common.h"

namespace {

using Clock = std::chrono::steady_clock;
using bench::die;
using bench::percentile;

struct Reader {
  pthread_t thread{};
  double from_go_ms = 0;
  double from_open_ms = 0;
  long bytes = 0;
  int error = 0;
};

struct Shared {
  std::string path;
  std::atomic<int> ready{0};
  std::atomic<int> done{0};
  std::atomic<bool> go{false};
  Clock::time_point go_at;
};

Shared g;

void* reader_main(void* arg) {
  auto* r = static_cast<Reader*>(arg);
  g.ready.fetch_add(1);
  g.go.wait(false);
  const auto t_open = Clock::now();
  const int fd = ::open(g.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r->error = errno;
  } else {
    char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        r->error = errno;
        break;
      }
      if (n == 0) break;
      r->bytes += n;
    }
    ::close(fd);
  }
  const auto t_end = Clock::now();
  r->from_go_ms = std::chrono::duration<double, std::milli>(t_end - g.go_at).count();
  r->from_open_ms = std::chrono::duration<double, std::milli>(t_end - t_open).count();
  g.done.fetch_add(1);
  return nullptr;
}

// Threads and VmRSS (KiB) of a process, or {-1, -1} once it is gone.
std::pair<long, long> sample(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  long threads = -1, rss = -1;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) threads = std::atol(line.c_str() + 8);
    if (line.rfind("VmRSS:", 0) == 0) rss = std::atol(line.c_str() + 6);
  }
  return {threads, rss};
}

}  // namespace

int main(int argc, char** argv) {
  int readers = 1, pid = 0;
  long expect = -1;
  CLI::App app{"R concurrent cold readers of one file; prints one JSON object"};
  app.add_option("--path", g.path, "the file to read")->required();
  app.add_option("--readers", readers, "reader threads, released together")->check(bench::positive());
  app.add_option("--sample-pid", pid, "sample this process's threads and RSS while they read");
  app.add_option("--expect-bytes", expect, "every reader must read exactly this many bytes");
  bench::parse(app, argc, argv);

  std::vector<Reader> rs(static_cast<size_t>(readers));
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  for (auto& r : rs) {
    if (pthread_create(&r.thread, &attr, reader_main, &r) != 0) die("cannot create a reader thread");
  }
  pthread_attr_destroy(&attr);
  while (g.ready.load() < readers) std::this_thread::yield();

  const auto [threads_before, rss_before] = pid > 0 ? sample(pid) : std::pair<long, long>{-1, -1};
  long max_threads = threads_before, max_rss = rss_before, samples = 0;
  g.go_at = Clock::now();
  g.go.store(true);
  g.go.notify_all();
  if (pid > 0) {
    while (g.done.load() < readers) {
      const auto [t, rss] = sample(pid);
      max_threads = std::max(max_threads, t);
      max_rss = std::max(max_rss, rss);
      ++samples;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }
  for (auto& r : rs) pthread_join(r.thread, nullptr);

  std::vector<double> go_ms, open_ms;
  long errors = 0, short_reads = 0;
  int first_error = 0;
  for (const auto& r : rs) {
    if (r.error != 0) {
      ++errors;
      if (first_error == 0) first_error = r.error;
      continue;
    }
    if (expect >= 0 && r.bytes != expect) ++short_reads;
    go_ms.push_back(r.from_go_ms);
    open_ms.push_back(r.from_open_ms);
  }
  std::printf(
      "{\"readers\": %d, \"errors\": %ld, \"first_error\": \"%s\", \"wrong_size\": %ld, "
      "\"from_go_ms\": {\"min\": %.3f, \"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f}, "
      "\"from_open_ms\": {\"min\": %.3f, \"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f}, "
      "\"daemon\": {\"threads_before\": %ld, \"rss_kib_before\": %ld, \"max_threads\": %ld, "
      "\"max_rss_kib\": %ld, \"samples\": %ld}}\n",
      readers, errors, first_error ? std::strerror(first_error) : "", short_reads, percentile(go_ms, 0),
      percentile(go_ms, 50), percentile(go_ms, 99), percentile(go_ms, 100), percentile(open_ms, 0),
      percentile(open_ms, 50), percentile(open_ms, 99), percentile(open_ms, 100), threads_before, rss_before,
      max_threads, max_rss, samples);
  return errors == 0 && short_reads == 0 ? 0 : 1;
}
