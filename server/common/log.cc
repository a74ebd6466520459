#include "server/common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace rnnserve {
namespace {

std::atomic<int> g_min_severity{static_cast<int>(LogSeverity::kInfo)};

char SeverityLetter(LogSeverity severity) {
  switch (severity) {
    case LogSeverity::kDebug:
      return 'D';
    case LogSeverity::kInfo:
      return 'I';
    case LogSeverity::kWarning:
      return 'W';
    case LogSeverity::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

void SetLogSeverity(LogSeverity min_severity) {
  g_min_severity.store(static_cast<int>(min_severity));
}

bool LogEnabled(LogSeverity severity) {
  return static_cast<int>(severity) >= g_min_severity.load();
}

std::string LogTimestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          now.time_since_epoch())
          .count() %
      1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[64];
  std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, millis);
  return stamp;
}

void LogLine(LogSeverity severity, const char* component,
             const std::string& message) {
  if (!LogEnabled(severity)) return;
  std::string line = LogTimestamp();
  line += ' ';
  line += SeverityLetter(severity);
  line += ' ';
  line += component;
  line += ": ";
  line += message;
  line += '\n';
  // One write per line keeps concurrent lines whole; a short write to a
  // broken stderr is not worth more than dropping the rest.
  const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
  (void)written;
}

}  // namespace rnnserve
