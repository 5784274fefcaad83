#include "app/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <syslog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/text.h"

namespace irsafs {
namespace {

// One JSON object per line: {"time": ..., "level": ..., "message": ...}.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto level = spdlog::level::to_string_view(msg.level);
    nlohmann::json line = {
        {"time", iso8601(msg.time, /*millis=*/true)},
        {"level", std::string(level.data(), level.size())},
        {"message", std::string(msg.payload.data(), msg.payload.size())},
        {"pid", static_cast<int>(getpid())},
    };
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

int parse_log_level(std::string_view name) {
  // spdlog's own names ("warn" and "err" included); only the ones offered are accepted.
  if (std::find(kLogLevels.begin(), kLogLevels.end(), name) == kLogLevels.end()) {
    throw std::invalid_argument("unknown log level '" + std::string(name) +
                                "' (use trace, debug, info, warn or error)");
  }
  return spdlog::level::from_str(std::string(name));
}

LogFormat parse_log_format(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  throw std::invalid_argument("unknown log format '" + std::string(name) + "' (use text or json)");
}

void setup_logging(int level, LogFormat format, LogSink sink) {
  std::shared_ptr<spdlog::logger> logger;
  if (sink == LogSink::kSyslog) {
    logger = std::make_shared<spdlog::logger>(
        "irsafs", std::make_shared<spdlog::sinks::syslog_sink_mt>("irsafs", LOG_PID, LOG_DAEMON, true));
  } else {
    logger = std::make_shared<spdlog::logger>("irsafs", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  }
  if (format == LogFormat::kJson) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else if (sink == LogSink::kSyslog) {
    logger->set_pattern("%v");
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z irsafs[%P] %l: %v");
  }
  logger->set_level(static_cast<spdlog::level::level_enum>(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace irsafs
