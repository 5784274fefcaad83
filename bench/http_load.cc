// bench_http_load: C concurrent HTTP/1.1 clients send GET PATH to 127.0.0.1:PORT until N
// requests are answered in total; prints JSON: requests, seconds, requests per second and
// latency percentiles (send of the request to the last byte of the answer).
//
//   bench_http_load --port 6003 [--path /healthz] [--clients 50] [--requests 100000]
//                   [--new-connection]
//
// Keep-alive by default (one connection per client, as a scraper or a load balancer); with
// --new-connection every request opens and closes its own connection, as a kubelet probe does.
// Any answer other than 200 counts as an error (the program exits 1 if there is one). This is
// a load generator, not an HTTP client for general use: it reads one answer by its
// Content-Length, which is all irsafs sends.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common.h"

namespace {

using Clock = std::chrono::steady_clock;

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads one answer; returns its status, or 0 on a broken connection / unreadable answer.
int read_answer(int fd, std::string& buf) {
  buf.clear();
  char tmp[4096];
  size_t head_end = std::string::npos;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return 0;
    buf.append(tmp, static_cast<size_t>(n));
    if (buf.size() > 65536) return 0;
  }
  if (buf.compare(0, 9, "HTTP/1.1 ") != 0 && buf.compare(0, 9, "HTTP/1.0 ") != 0) return 0;
  const int status = std::atoi(buf.c_str() + 9);
  size_t length = 0;
  for (size_t pos = buf.find("\r\n"); pos < head_end; pos = buf.find("\r\n", pos + 2)) {
    if (strncasecmp(buf.c_str() + pos + 2, "Content-Length:", 15) == 0) {
      length = std::strtoul(buf.c_str() + pos + 17, nullptr, 10);
    }
  }
  const size_t want = head_end + 4 + length;
  while (buf.size() < want) {
    const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return 0;
    buf.append(tmp, static_cast<size_t>(n));
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"C concurrent HTTP/1.1 clients against 127.0.0.1:PORT; JSON out"};
  int port = 0;
  std::string path = "/healthz";
  int clients = 50;
  int requests = 100000;
  bool new_connection = false;
  app.add_option("--port", port, "port on 127.0.0.1")->required()->check(CLI::Range(1, 65535));
  app.add_option("--path", path, "path to GET");
  app.add_option("--clients", clients, "concurrent clients (threads)")->check(bench::positive());
  app.add_option("--requests", requests, "requests in total")->check(bench::positive());
  app.add_flag("--new-connection", new_connection, "a new connection per request (as a probe)");
  bench::parse(app, argc, argv);

  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                              (new_connection ? "Connection: close\r\n" : "") + "\r\n";
  std::atomic<int> next{0};
  std::atomic<int> errors{0};
  std::atomic<int> reconnects{0};
  std::vector<std::vector<double>> latencies(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto& lat = latencies[static_cast<size_t>(c)];
      lat.reserve(static_cast<size_t>(requests / clients + 1));
      std::string buf;
      int fd = -1;
      while (next.fetch_add(1) < requests) {
        const auto start = Clock::now();
        if (fd < 0) fd = connect_to(port);
        int status = 0;
        if (fd >= 0 && send_all(fd, request)) status = read_answer(fd, buf);
        if (status == 0 && fd >= 0 && !new_connection) {
          // The server may close an idle keep-alive connection: one retry on a new one.
          ::close(fd);
          fd = connect_to(port);
          reconnects.fetch_add(1);
          if (fd >= 0 && send_all(fd, request)) status = read_answer(fd, buf);
        }
        lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        if (status != 200) errors.fetch_add(1);
        if (new_connection || status == 0) {
          if (fd >= 0) ::close(fd);
          fd = -1;
        }
      }
      if (fd >= 0) ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::printf(
      "{\"requests\": %zu, \"clients\": %d, \"new_connection\": %s, \"seconds\": %.4f, \"rps\": %.1f, "
      "\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f, \"errors\": %d, \"reconnects\": %d}\n",
      all.size(), clients, new_connection ? "true" : "false", seconds, static_cast<double>(all.size()) / seconds,
      bench::percentile(all, 50), bench::percentile(all, 99), bench::percentile(all, 100), errors.load(),
      reconnects.load());
  return errors.load() == 0 ? 0 : 1;
}
