#include "daemon/logging.h"

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace cityops::daemon {

namespace {

std::string Rfc3339(spdlog::log_clock::time_point t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(t), absl::UTCTimeZone());
}

// One JSON object per line, with the message escaped as JSON strings require.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line =
        absl::StrFormat(R"({"time":"%s","level":"%s","message":")", Rfc3339(msg.time),
                        spdlog::level::to_string_view(msg.level).data());
    for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      switch (c) {
        case '"':
          line += "\\\"";
          break;
        case '\\':
          line += "\\\\";
          break;
        case '\n':
          line += "\\n";
          break;
        case '\r':
          line += "\\r";
          break;
        case '\t':
          line += "\\t";
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            line += absl::StrFormat("\\u%04x", static_cast<int>(c));
          } else {
            line += c;
          }
      }
    }
    line += "\"}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

void ConfigureLogging(const v1::LoggingConfig& config) {
  auto logger = std::make_shared<spdlog::logger>("cityops",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (config.format() == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(spdlog::level::from_str(config.level().empty() ? "info" : config.level()));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace cityops::daemon
