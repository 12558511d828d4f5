// The daemon's logs: spdlog to stderr (systemd's journal), as text or as one JSON object
// per line, at the configured level.
#ifndef CITYOPS_DAEMON_LOGGING_H_
#define CITYOPS_DAEMON_LOGGING_H_

#include "cityops/v1/config.pb.h"

namespace cityops::daemon {

// Applies `config` to spdlog's default logger. Text lines read
// "2026-11-24T05:26:09.123Z info daemon: ..."; JSON lines
// {"time":"2026-11-24T05:26:09.123Z","level":"info","message":"daemon: ..."}.
void ConfigureLogging(const v1::LoggingConfig& config);

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_LOGGING_H_
