// Logging set-up: spdlog to stderr (text or JSON lines) or to syslog once daemonized.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace irsafs {

enum class LogFormat { kText, kJson };
enum class LogSink { kStderr, kSyslog };

// The --log-level values, as spdlog names them.
inline constexpr std::array<std::string_view, 5> kLogLevels = {"trace", "debug", "info", "warn", "error"};

// Throws std::invalid_argument naming the accepted values.
int parse_log_level(std::string_view name);  // returns an spdlog::level::level_enum
LogFormat parse_log_format(std::string_view name);

void setup_logging(int level, LogFormat format, LogSink sink = LogSink::kStderr);

}  // namespace irsafs
