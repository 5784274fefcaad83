// Logging set-up: spdlog to stderr (text or JSON lines) or to syslog once daemonized.
#pragma once

#include <string>
#include <string_view>

namespace irsafs {

enum class LogFormat { kText, kJson };
enum class LogSink { kStderr, kSyslog };

// Throws std::invalid_argument naming the accepted values.
int parse_log_level(std::string_view name);  // returns an spdlog::level::level_enum
LogFormat parse_log_format(std::string_view name);

void setup_logging(int level, LogFormat format, LogSink sink = LogSink::kStderr);

}  // namespace irsafs
