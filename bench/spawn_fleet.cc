// Starts N copies of a command together and records when each ends. The children are forked
// first and held on a pipe; closing the pipe releases them all at once, so the exec and
// start-up of every client is inside the measurement (as it would be for a fleet of pods).
// "{i}" in any argument is replaced with the child's index (0..N-1). Prints one JSON object.
//
//   bench_spawn_fleet --n 1000 [--stderr-dir DIR] -- /path/irsafs fetch --run-id c{i} ...
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common.h"

namespace {

using Clock = std::chrono::steady_clock;
using bench::die;
using bench::percentile;

std::string substitute(std::string s, int i) {
  const std::string key = "{i}";
  for (size_t pos = s.find(key); pos != std::string::npos; pos = s.find(key, pos)) {
    s.replace(pos, key.size(), std::to_string(i));
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  std::string stderr_dir;
  std::vector<std::string> command;
  CLI::App app{"Starts N copies of a command together, records when each ends; prints one JSON object"};
  app.add_option("--n", n, "how many copies")->required()->check(bench::positive());
  app.add_option("--stderr-dir", stderr_dir, "each child's stderr goes to DIR/INDEX.err");
  app.add_option("command", command, "after --: the command and its arguments ({i}: the index)")->required();
  bench::parse(app, argc, argv);

  // Room for N children and their files.
  rlimit lim{};
  if (getrlimit(RLIMIT_NPROC, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NPROC, &lim);
  }

  int gate[2];
  if (pipe2(gate, O_CLOEXEC) != 0) die(std::string("pipe: ") + std::strerror(errno));
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);

  std::map<pid_t, int> index;
  const auto fork_start = Clock::now();
  for (int k = 0; k < n; ++k) {
    std::vector<std::string> args;
    for (const auto& c : command) args.push_back(substitute(c, k));
    std::string err_path = stderr_dir.empty() ? "" : stderr_dir + "/" + std::to_string(k) + ".err";
    const pid_t pid = fork();
    if (pid < 0) {
      // Release and reap what we have, then fail.
      ::close(gate[1]);
      for (auto& [p, _] : index) waitpid(p, nullptr, 0);
      die(std::string("fork: ") + std::strerror(errno) + " after " + std::to_string(k) + " children");
    }
    if (pid == 0) {
      ::close(gate[1]);
      ::dup2(devnull, STDIN_FILENO);
      ::dup2(devnull, STDOUT_FILENO);
      if (!err_path.empty()) {
        const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) ::dup2(fd, STDERR_FILENO);
      } else {
        ::dup2(devnull, STDERR_FILENO);
      }
      char c;
      while (::read(gate[0], &c, 1) < 0 && errno == EINTR) {
      }
      std::vector<char*> cargs;
      for (auto& s : args) cargs.push_back(s.data());
      cargs.push_back(nullptr);
      execv(cargs[0], cargs.data());
      _exit(127);
    }
    index[pid] = k;
  }
  const double fork_s = std::chrono::duration<double>(Clock::now() - fork_start).count();

  const auto t0 = Clock::now();
  ::close(gate[1]);  // release them all
  std::vector<double> end_s(static_cast<size_t>(n), -1);
  int ok = 0, failed = 0;
  std::map<int, int> statuses;
  for (int reaped = 0; reaped < n;) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto it = index.find(pid);
    if (it == index.end()) continue;
    end_s[static_cast<size_t>(it->second)] = std::chrono::duration<double>(Clock::now() - t0).count();
    ++reaped;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ++statuses[code];
    (code == 0 ? ok : failed)++;
  }
  std::vector<double> ok_ends;
  double last = 0;
  for (double e : end_s) {
    last = std::max(last, e);
    if (e >= 0) ok_ends.push_back(e);
  }
  std::printf("{\"n\": %d, \"fork_s\": %.4f, \"makespan_s\": %.4f, \"ok\": %d, \"failed\": %d, \"exit_codes\": {", n,
              fork_s, last, ok, failed);
  bool first = true;
  for (auto& [code, count] : statuses) {
    std::printf("%s\"%d\": %d", first ? "" : ", ", code, count);
    first = false;
  }
  rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::printf("}, \"children_cpu_s\": %.3f, \"end_s\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"max\": %.4f}}\n",
              cpu, percentile(ok_ends, 50),
              percentile(ok_ends, 90), percentile(ok_ends, 99), percentile(ok_ends, 100));
  return 0;
}
