#include "fetcher/curl_transport.h"

#include <curl/curl.h>
#include <malloc.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string_view>

#include "common/text.h"

namespace irsafs {
namespace {

// Owns an easy handle and the error buffer libcurl writes into until cleanup; neither moves.
class EasyHandle {
 public:
  EasyHandle() : curl_(curl_easy_init()) {
    if (curl_ == nullptr) throw std::runtime_error("Cannot create a libcurl handle");
    error_[0] = '\0';
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, error_);
  }
  ~EasyHandle() { curl_easy_cleanup(curl_); }
  EasyHandle(const EasyHandle&) = delete;
  EasyHandle& operator=(const EasyHandle&) = delete;

  CURL* get() const { return curl_; }
  std::string describe(CURLcode code) const {
    std::string text = error_[0] != '\0' ? std::string(error_) : curl_easy_strerror(code);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    // libcurl may quote what the server sent (a host name, a status line): valid UTF-8 only.
    return printable(text);
  }

 private:
  CURL* curl_;
  char error_[CURL_ERROR_SIZE];
};

// Owns a header list; the Authorization line is wiped before the list is freed.
class HeaderList {
 public:
  HeaderList() = default;
  ~HeaderList() {
    for (curl_slist* item = list_; item != nullptr; item = item->next) {
      volatile char* p = item->data;
      for (std::size_t i = 0, n = std::strlen(item->data); i < n; ++i) p[i] = 0;
    }
    curl_slist_free_all(list_);
  }
  HeaderList(const HeaderList&) = delete;
  HeaderList& operator=(const HeaderList&) = delete;

  void add(const std::string& line) {
    curl_slist* next = curl_slist_append(list_, line.c_str());
    if (next == nullptr) throw std::runtime_error("Cannot allocate a header");
    list_ = next;
  }
  curl_slist* get() const { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

struct Transfer {
  HttpResponse* response;
  std::size_t max_body;
  bool too_large = false;
  std::stop_token stop;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (t->response->body.size() + n > t->max_body) {
    t->too_large = true;
    return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
  }
  std::string& body = t->response->body;
  if (body.size() + n > body.capacity()) {
    // Grow by hand so the outgrown buffer is wiped: a body may carry a token (the token
    // endpoint's, or one echoed in an error page).
    std::string bigger;
    bigger.reserve(std::max(body.capacity() * 2, body.size() + n));
    bigger.append(body);
    Secret::wipe_string(body);
    body.swap(bigger);
  }
  body.append(data, n);
  return n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<Transfer*>(user)->stop.stop_requested() ? 1 : 0;
}

// libcurl and OpenSSL hold the token in their buffers (the request being built, the token
// endpoint's response). Their memory is wiped when freed, so the token does not linger in the
// daemon's heap after its request.
void wipe_block(void* p) {
  if (p != nullptr) explicit_bzero(p, malloc_usable_size(p));
}
void wiping_free(void* p) {
  wipe_block(p);
  std::free(p);
}
void* wiping_realloc(void* p, size_t n) {
  if (p == nullptr) return std::malloc(n);
  const size_t old = malloc_usable_size(p);
  if (n != 0 && n <= old) return p;
  void* q = n == 0 ? nullptr : std::malloc(n);
  if (n != 0 && q == nullptr) return nullptr;  // p stays valid, as realloc promises
  if (q != nullptr) std::memcpy(q, p, old);
  wiping_free(p);
  return q;
}
char* wiping_strdup(const char* s) {
  const size_t n = std::strlen(s) + 1;
  auto* d = static_cast<char*>(std::malloc(n));
  if (d != nullptr) std::memcpy(d, s, n);
  return d;
}
void* ssl_malloc(size_t n, const char*, int) { return std::malloc(n); }
void* ssl_realloc(void* p, size_t n, const char*, int) { return wiping_realloc(p, n); }
void ssl_free(void* p, const char*, int) { wiping_free(p); }

std::mutex curl_global_mutex;
bool curl_global_done = false;  // guarded by curl_global_mutex

}  // namespace

CurlGlobal::CurlGlobal() {
  // Must come before OpenSSL allocates anything; fails harmlessly if it already has.
  CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free);
#ifdef CURL_VERSION_THREADSAFE
  const bool threadsafe = (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_THREADSAFE) != 0;
#else
  const bool threadsafe = false;
#endif
  if (!threadsafe) ensure();  // now, while this is the only thread
}

CurlGlobal::~CurlGlobal() {
  std::lock_guard lock(curl_global_mutex);
  if (curl_global_done) curl_global_cleanup();
  curl_global_done = false;
}

void CurlGlobal::ensure() {
  std::lock_guard lock(curl_global_mutex);
  if (curl_global_done) return;
  if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, std::malloc, wiping_free, wiping_realloc, wiping_strdup,
                           std::calloc) != CURLE_OK) {
    throw std::runtime_error("Cannot initialise libcurl");
  }
  curl_global_done = true;
}

HttpResponse CurlTransport::perform(const HttpRequest& request, std::stop_token stop) {
  CurlGlobal::ensure();
  HttpResponse response;
  Transfer transfer{&response, settings_.max_body, false, stop};
  EasyHandle easy;
  CURL* c = easy.get();
  HeaderList headers;
  for (const auto& [name, value] : request.headers) headers.add(name + ": " + value);
  if (request.bearer != nullptr) {
    std::string line = "Authorization: Bearer ";
    line.append(request.bearer->reveal());
    headers.add(line);
    Secret(std::move(line)).wipe();
  }

  const Duration timeout = std::min(settings_.timeout, request.timeout.value_or(settings_.timeout));
  const long timeout_ms = std::max<long>(
      1, static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  const long connect_ms =
      settings_.connect_timeout
          ? std::clamp<long>(static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                   *settings_.connect_timeout)
                                                   .count()),
                             1, timeout_ms)
          : timeout_ms;
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  // A body that stops flowing fails after a second below 1 byte/s, well before the total
  // timeout when that is long.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, std::max<long>(1, timeout_ms / 1000));
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);  // irsa-svc does not redirect; never follow
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_USERAGENT, "irsafs/" IRSAFS_VERSION);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &transfer);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, settings_.tls.insecure ? 0L : 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, settings_.tls.insecure ? 0L : 2L);
  if (!settings_.tls.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, settings_.tls.ca_file.c_str());
  curl_blob ca_blob{const_cast<char*>(settings_.tls.ca_pem.data()), settings_.tls.ca_pem.size(),
                    CURL_BLOB_NOCOPY};
  if (!settings_.tls.ca_pem.empty()) curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca_blob);
  if (request.method == HttpRequest::Method::kPost) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  }

  const CURLcode code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  // libcurl reads Retry-After (seconds or an HTTP date) for us: 0 when absent or already past.
  if (curl_off_t retry_after = 0; curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0) {
    response.retry_after = std::chrono::seconds(std::min<curl_off_t>(retry_after, 24 * 3600));
  }
  if (code == CURLE_OK) {
    response.outcome = HttpResponse::Outcome::kCompleted;
  } else if (transfer.too_large) {
    response.outcome = HttpResponse::Outcome::kTooLarge;
    response.error = "response body larger than " + std::to_string(settings_.max_body) + " bytes";
  } else if (code == CURLE_ABORTED_BY_CALLBACK && stop.stop_requested()) {
    response.outcome = HttpResponse::Outcome::kCancelled;
    response.error = "cancelled";
  } else {
    response.outcome = HttpResponse::Outcome::kTransportError;
    response.timed_out = code == CURLE_OPERATION_TIMEDOUT;
    response.permanent = code == CURLE_PEER_FAILED_VERIFICATION || code == CURLE_SSL_CACERT_BADFILE ||
                         code == CURLE_SSL_CERTPROBLEM || code == CURLE_URL_MALFORMAT ||
                         code == CURLE_UNSUPPORTED_PROTOCOL;
    response.error = easy.describe(code);
    long os_errno = 0;
    if (curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno != 0) {
      response.error += " (" + std::string(std::strerror(static_cast<int>(os_errno))) + ")";
    }
  }
  if (response.outcome != HttpResponse::Outcome::kCompleted) Secret::wipe_string(response.body);
  return response;
}

}  // namespace irsafs
