// What every long analyst run shares: a progress line on the terminal, Ctrl-C that stops
// the run cleanly, and output files that are written whole or not at all.
//
//   StopScope stop;                          // Ctrl-C / SIGTERM now set a flag
//   Progress progress(std::cerr, {.what = "export", .total = n});
//   for (...) {
//     if (stop.requested()) return Cancelled();
//     progress.Advance(1);
//   }
//   progress.Finish();                       // "export: 1,234,567 events in 4.1 s (301,113/s)"
//
// On a terminal the progress is one line redrawn in place (a bar with the rate and the
// time left when the total is known); otherwise a plain line every few seconds, so that
// logs of scripted runs stay readable.
#ifndef CITYOPS_ANALYSIS_PROGRESS_H_
#define CITYOPS_ANALYSIS_PROGRESS_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernel/clock.h"

namespace cityops::analysis {

// While one lives, SIGINT and SIGTERM set a flag instead of ending the process; the
// previous handlers come back when it is destroyed. A second Ctrl-C while a run is
// stopping ends the process at once (the default action), as users expect.
class StopScope {
 public:
  StopScope();
  ~StopScope();
  StopScope(const StopScope&) = delete;
  StopScope& operator=(const StopScope&) = delete;

  // True once a stop was asked for (also by RequestStop).
  bool requested() const;
  // What a run that stopped early returns: CANCELLED, "stopped by request; <what>".
  static absl::Status Stopped(const std::string& what_was_left);
};

// Asks every live StopScope's run to stop (tests, and the signal handler).
void RequestStop();
// Clears a stop request (a new run starts).
void ClearStopRequest();
bool StopRequested();

struct ProgressOptions {
  std::string what;             // "replay", "export", ... starts each line
  uint64_t total = 0;           // 0: unknown (no bar, no time left)
  std::string unit = "events";  // what is counted
  // A redrawn line (true) or plain lines (false); by default, whether stderr is a terminal.
  enum class Style { kAuto, kTerminal, kPlain } style = Style::kAuto;
  absl::Duration every = absl::ZeroDuration();  // 0: 0.2 s on a terminal, 5 s otherwise
  const kernel::Clock* clock = kernel::Clock::Real();
};

class Progress {
 public:
  Progress(std::ostream& out, ProgressOptions options);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Counts `n` more; draws when the interval has passed since the last draw.
  void Advance(uint64_t n = 1);
  // The total became known (or changed).
  void SetTotal(uint64_t total);
  uint64_t done() const { return done_; }
  // Ends the progress line and prints "<what>: N <unit> in T (R/s)"; returns that line
  // (without the newline). Later calls do nothing and return the same line.
  std::string Finish();

 private:
  void Draw(absl::Time now);

  std::ostream& out_;
  ProgressOptions options_;
  bool terminal_;
  absl::Duration every_;
  absl::Time started_;
  absl::Time last_draw_;
  uint64_t done_ = 0;
  uint64_t next_check_ = 1;  // Looks at the clock only every so many Advance()s.
  bool drawn_ = false;
  std::string finished_;
};

// "1,234,567"
std::string WithThousands(uint64_t n);
// "12.4 s", "3 min 05 s", "1 h 02 min"
std::string HumanDuration(absl::Duration d);

// A file that appears at its path only when Commit() succeeds: written to a temporary
// name beside it, flushed, synced and renamed. Destroyed without Commit() (an error, a
// Ctrl-C), the temporary file is removed and nothing half-written is left behind.
// Path "-" writes to the given fallback stream (standard output) instead, line by line.
class OutputFile {
 public:
  static absl::StatusOr<std::unique_ptr<OutputFile>> Create(const std::string& path,
                                                            std::ostream& fallback);
  ~OutputFile();
  std::ostream& stream();
  absl::Status Commit();
  const std::string& path() const { return path_; }

 private:
  OutputFile(std::string path, std::string temp, std::ostream* fallback);

  std::string path_;
  std::string temp_;
  std::ostream* fallback_;
  std::ofstream file_;
  bool committed_ = false;
};

// Parses "2026-09-21T19:40:00Z" (RFC 3339, any offset) for --from/--to/--at; the error
// names the flag and gives an example.
absl::StatusOr<absl::Time> ParseTimeFlag(const std::string& flag, const std::string& value);

}  // namespace cityops::analysis

#endif  // CITYOPS_ANALYSIS_PROGRESS_H_
