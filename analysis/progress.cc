#include "analysis/progress.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cityops::analysis {
namespace {

std::atomic<bool> stop_requested{false};
struct sigaction previous_int;
struct sigaction previous_term;
int scopes = 0;  // StopScopes alive; handlers are installed by the first, removed by the last.

extern "C" void OnStopSignal(int signal) {
  stop_requested.store(true);
  // The next one of the same signal ends the process: a run that does not stop is not
  // a trap.
  ::signal(signal, SIG_DFL);
}

constexpr int kBarWidth = 28;

}  // namespace

void RequestStop() { stop_requested.store(true); }
void ClearStopRequest() { stop_requested.store(false); }
bool StopRequested() { return stop_requested.load(); }

StopScope::StopScope() {
  if (scopes++ > 0) return;
  ClearStopRequest();
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_int);
  sigaction(SIGTERM, &action, &previous_term);
}

StopScope::~StopScope() {
  if (--scopes > 0) return;
  sigaction(SIGINT, &previous_int, nullptr);
  sigaction(SIGTERM, &previous_term, nullptr);
}

bool StopScope::requested() const { return StopRequested(); }

absl::Status StopScope::Stopped(const std::string& what_was_left) {
  return absl::CancelledError(absl::StrCat("stopped by request; ", what_was_left));
}

std::string WithThousands(uint64_t n) {
  std::string digits = absl::StrCat(n);
  std::string out;
  const size_t first = digits.size() % 3 == 0 ? 3 : digits.size() % 3;
  out.append(digits, 0, first);
  for (size_t i = first; i < digits.size(); i += 3) {
    out.push_back(',');
    out.append(digits, i, 3);
  }
  return out;
}

std::string HumanDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  const double seconds = absl::ToDoubleSeconds(d);
  if (seconds < 60) return absl::StrFormat("%.1f s", seconds);
  const int64_t whole = absl::ToInt64Seconds(d);
  if (whole < 3600) return absl::StrFormat("%d min %02d s", whole / 60, whole % 60);
  return absl::StrFormat("%d h %02d min", whole / 3600, (whole % 3600) / 60);
}

Progress::Progress(std::ostream& out, ProgressOptions options)
    : out_(out), options_(std::move(options)) {
  switch (options_.style) {
    case ProgressOptions::Style::kTerminal:
      terminal_ = true;
      break;
    case ProgressOptions::Style::kPlain:
      terminal_ = false;
      break;
    case ProgressOptions::Style::kAuto:
      terminal_ = ::isatty(STDERR_FILENO) == 1;
      break;
  }
  every_ = options_.every > absl::ZeroDuration()
               ? options_.every
               : (terminal_ ? absl::Milliseconds(200) : absl::Seconds(5));
  started_ = options_.clock->Now();
  last_draw_ = started_;
}

Progress::~Progress() {
  // A run that ends by an error still leaves the terminal on a fresh line.
  if (terminal_ && drawn_ && finished_.empty()) out_ << "\n" << std::flush;
}

void Progress::SetTotal(uint64_t total) { options_.total = total; }

void Progress::Advance(uint64_t n) {
  done_ += n;
  if (done_ < next_check_) return;
  // Reading the clock costs more than counting: look at it every ~1/64 of what was
  // done since the start, at least every 4096 units.
  next_check_ = done_ + std::clamp<uint64_t>(done_ / 64, 1, 4096);
  const absl::Time now = options_.clock->Now();
  if (now - last_draw_ >= every_) Draw(now);
}

void Progress::Draw(absl::Time now) {
  last_draw_ = now;
  const double elapsed = absl::ToDoubleSeconds(now - started_);
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0;
  std::string line = absl::StrCat(options_.what, ": ");
  if (options_.total > 0) {
    const double fraction =
        std::min(1.0, static_cast<double>(done_) / static_cast<double>(options_.total));
    if (terminal_) {
      const int filled = static_cast<int>(fraction * kBarWidth);
      absl::StrAppend(&line, "[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'),
                      "] ");
    }
    absl::StrAppend(&line, absl::StrFormat("%5.1f%% ", 100 * fraction), WithThousands(done_), "/",
                    WithThousands(options_.total), " ", options_.unit);
    if (rate > 0 && options_.total > done_) {
      absl::StrAppend(&line, ", ", HumanDuration(absl::Seconds((options_.total - done_) / rate)),
                      " left");
    }
  } else {
    absl::StrAppend(&line, WithThousands(done_), " ", options_.unit);
  }
  absl::StrAppend(&line, absl::StrFormat(", %s/s", WithThousands(static_cast<uint64_t>(rate))));
  if (terminal_) {
    out_ << "\r" << line << "\x1b[K" << std::flush;  // \x1b[K: erase the rest of the line
  } else {
    out_ << line << "\n" << std::flush;
  }
  drawn_ = true;
}

std::string Progress::Finish() {
  if (!finished_.empty()) return finished_;
  const absl::Duration took = options_.clock->Now() - started_;
  const double seconds = absl::ToDoubleSeconds(took);
  const uint64_t rate =
      seconds > 0 ? static_cast<uint64_t>(static_cast<double>(done_) / seconds) : 0;
  finished_ = absl::StrCat(options_.what, ": ", WithThousands(done_), " ", options_.unit, " in ",
                           HumanDuration(took), " (", WithThousands(rate), "/s)");
  if (terminal_ && drawn_) out_ << "\r\x1b[K";
  out_ << finished_ << "\n" << std::flush;
  return finished_;
}

absl::StatusOr<std::unique_ptr<OutputFile>> OutputFile::Create(const std::string& path,
                                                               std::ostream& fallback) {
  if (path == "-" || path.empty()) {
    return std::unique_ptr<OutputFile>(new OutputFile("-", "", &fallback));
  }
  std::string temp = absl::StrCat(path, ".partial-", ::getpid());
  auto file = std::unique_ptr<OutputFile>(new OutputFile(path, temp, nullptr));
  file->file_.open(temp, std::ios::out | std::ios::trunc | std::ios::binary);
  if (!file->file_) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", path, " (", std::strerror(errno),
                     "); check that its directory exists and is writable"));
  }
  return file;
}

OutputFile::OutputFile(std::string path, std::string temp, std::ostream* fallback)
    : path_(std::move(path)), temp_(std::move(temp)), fallback_(fallback) {}

OutputFile::~OutputFile() {
  if (fallback_ != nullptr || committed_) return;
  file_.close();
  std::remove(temp_.c_str());
}

std::ostream& OutputFile::stream() {
  if (fallback_ != nullptr) return *fallback_;
  return file_;
}

absl::Status OutputFile::Commit() {
  if (fallback_ != nullptr) {
    fallback_->flush();
    committed_ = true;
    return absl::OkStatus();
  }
  file_.flush();
  const bool written = static_cast<bool>(file_);
  file_.close();
  if (!written) {
    return absl::DataLossError(
        absl::StrCat("writing ", path_, " failed (disk full?); nothing was left there"));
  }
  // Sync before the rename, so that the name never points at unsynced data.
  const int fd = ::open(temp_.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot rename ", temp_, " to ", path_, ": ", std::strerror(errno)));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> ParseTimeFlag(const std::string& flag, const std::string& value) {
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, value, &t, &error)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s '%s' is not an RFC 3339 time (%s); write e.g. 2026-09-21T19:40:00Z "
                        "or 2026-09-21T19:40:00+08:00",
                        flag, value, error));
  }
  return t;
}

}  // namespace cityops::analysis
