// Process log: one line per event on stderr, prefixed with a UTC timestamp
// (millisecond resolution), the severity letter and the component:
//   2026-11-26T07:30:01.123Z I server: listening on gRPC 127.0.0.1:8001
// Lines below the process's level are dropped before they are formatted by
// the caller (check LogEnabled for anything costly). The default level is
// info: start-up steps, model loads and errors, no per-request lines.
//
// Thread-safe: a line is written with one write(2), so lines from different
// threads never interleave.
#ifndef RNNSERVE_COMMON_LOG_H_
#define RNNSERVE_COMMON_LOG_H_

#include <string>

namespace rnnserve {

enum class LogSeverity { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogSeverity(LogSeverity min_severity);
bool LogEnabled(LogSeverity severity);

// Writes `message` as one line from `component` ("server", "repository"...).
void LogLine(LogSeverity severity, const char* component,
             const std::string& message);

// "2026-11-26T07:30:01.123Z", the prefix LogLine uses.
std::string LogTimestamp();

}  // namespace rnnserve

#endif  // RNNSERVE_COMMON_LOG_H_
