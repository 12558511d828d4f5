// The child program of the crash test (tests/crash_test.cc) and of the cross-process
// lock test (tests/event_log_test.cc). Not a tool: it trusts its arguments.
//
//   crash_appender hold <dir>
//       Opens the log, prints "ready", keeps it open until stdin reaches end of file,
//       then closes it and exits 0.
//   crash_appender append <dir> <seed> <sync|buffered>
//       Opens the log, prints "ready", then appends forever, as ingest and a rules stage
//       would, until it is killed:
//         * batches of 1..kMaxBatch readings from Kafka topic partition k (k = 0, 1) into
//           log partition k, whose offsets continue exactly from the stored next offset,
//           each batch storing the new next offset; sometimes one batch per partition
//           in one AppendAll;
//         * every few batches a `case/<n>` event with idempotency key
//           `case/<n>/<version>` and the expected version, either inside a readings
//           batch or alone in log partition 2 with the stage checkpoint "crash.rules"
//           (next = partition 2's next sequence);
//         * sometimes a stored idempotency key again, which must come back as a
//           duplicate pointing at the original event.
//       After each successful append it prints "ack p <k> <next offset>" or
//       "ack case <n> <version>", so the test can check that acknowledged appends
//       survived the kill.
//
// Exit codes: 2 bad usage or the log does not open, 3 an append failed, 4 the log
// answered something its contract rules out.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernel/event_log.h"
#include "tests/testing/temp_dir.h"

namespace cityops {
namespace {

using kernel::AppendBatch;
using kernel::AppendResult;
using kernel::EventLog;
using kernel::KafkaOffset;
using kernel::Partition;
using kernel::StreamVersion;

constexpr int kReadingPartitions = 2;
constexpr Partition kCasePartition(2);
constexpr int kCases = 6;
constexpr uint32_t kMaxBatch = 24;
constexpr std::string_view kStage = "crash.rules";

[[noreturn]] void Die(int code, std::string_view what) {
  std::fprintf(stderr, "crash_appender: %.*s\n", static_cast<int>(what.size()), what.data());
  std::_Exit(code);
}

void Print(const std::string& line) {
  const std::string text = line + "\n";
  // One write() per line: lines never interleave and nothing waits in a buffer.
  if (::write(STDOUT_FILENO, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    Die(2, "cannot write to stdout");
  }
}

std::unique_ptr<EventLog> OpenOrDie(const std::string& dir, kernel::Durability durability) {
  kernel::EventLogOptions options;
  options.path = dir;
  options.durability = durability;
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(options);
  if (!log.ok()) Die(2, log.status().ToString());
  return std::move(*log);
}

int Hold(const std::string& dir) {
  std::unique_ptr<EventLog> log = OpenOrDie(dir, kernel::Durability::kSyncEachAppend);
  Print("ready");
  char c;
  while (::read(STDIN_FILENO, &c, 1) > 0) {
  }
  return 0;
}

class Appender {
 public:
  Appender(EventLog* log, uint64_t seed) : log_(log), rng_(seed) {
    for (int k = 0; k < kReadingPartitions; ++k) {
      absl::StatusOr<std::optional<KafkaOffset>> stored =
          log_->StoredSourcePosition(testing::kReadingsTopic, k);
      if (!stored.ok()) Die(3, stored.status().ToString());
      next_offset_[k] = stored->value_or(KafkaOffset(0)).value();
    }
  }

  [[noreturn]] void Run() {
    for (;;) {
      const uint32_t action = Uniform(10);
      if (action < 6) {
        AppendReadings();
      } else if (action < 8) {
        AppendToBothPartitions();
      } else {
        AppendCaseAlone();
      }
    }
  }

 private:
  uint32_t Uniform(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng_); }

  // Adds 1..kMaxBatch readings of Kafka partition `k` and the position after them.
  uint32_t AddReadings(AppendBatch& batch, int k) {
    const uint32_t n = 1 + Uniform(kMaxBatch);
    for (uint32_t i = 0; i < n; ++i) {
      const int64_t offset = next_offset_[k] + i;
      batch.Add(testing::ReadingEvent(absl::StrCat("dev-", k, "-", offset % 64), offset, k));
    }
    batch.SetSourcePosition(testing::kReadingsTopic, k, KafkaOffset(next_offset_[k] + n));
    return n;
  }

  // A case step: the next event of case/<n> with its expected version.
  struct CaseStep {
    std::string stream;
    uint64_t version = 0;  // The version the event will get.
    size_t entry = 0;      // Its index in the batch.
  };

  CaseStep AddCaseEvent(AppendBatch& batch) {
    const std::string id = absl::StrCat(Uniform(kCases));
    CaseStep step;
    step.stream = absl::StrCat("case/", id);
    absl::StatusOr<StreamVersion> current = log_->CurrentVersion(step.stream);
    if (!current.ok()) Die(3, current.status().ToString());
    step.version = current->value() + 1;
    const std::string key = absl::StrCat(step.stream, "/", step.version);
    step.entry = batch.size();
    batch.Add(step.version == 1 ? testing::CaseReportedEvent(id, key)
                                : testing::CaseUrgedEvent(id, key, absl::StrCat("urge ", key)),
              *current);
    return step;
  }

  void CheckCaseStep(const CaseStep& step, const AppendResult& result) {
    if (result.outcomes.size() <= step.entry || result.outcomes[step.entry].duplicate) {
      Die(4, absl::StrCat("case event for ", step.stream, " version ", step.version,
                          " was not appended"));
    }
    absl::StatusOr<StreamVersion> now = log_->CurrentVersion(step.stream);
    if (!now.ok() || now->value() != step.version) {
      Die(4, absl::StrCat(step.stream, " is not at version ", step.version, " after appending"));
    }
    Print(absl::StrCat("ack case ", step.stream, " ", step.version));
  }

  void CheckReadings(const AppendResult& result, int k, uint32_t n, size_t extra) {
    if (result.appended != n + extra || result.duplicates != 0) {
      Die(4, absl::StrCat("partition ", k, ": appended ", result.appended, " of ", n + extra,
                          ", duplicates ", result.duplicates));
    }
    next_offset_[k] += n;
    Print(absl::StrCat("ack p ", k, " ", next_offset_[k]));
  }

  void AppendReadings() {
    const int k = static_cast<int>(Uniform(kReadingPartitions));
    AppendBatch batch{Partition(k)};
    const uint32_t n = AddReadings(batch, k);
    std::optional<CaseStep> step;
    if (Uniform(6) == 0) step = AddCaseEvent(batch);
    absl::StatusOr<AppendResult> result = log_->Append(std::move(batch));
    if (!result.ok()) Die(3, result.status().ToString());
    CheckReadings(*result, k, n, step.has_value() ? 1 : 0);
    if (step.has_value()) CheckCaseStep(*step, *result);
  }

  void AppendToBothPartitions() {
    std::vector<AppendBatch> batches;
    uint32_t n[kReadingPartitions];
    for (int k = 0; k < kReadingPartitions; ++k) {
      batches.emplace_back(Partition(k));
      n[k] = AddReadings(batches.back(), k);
    }
    absl::StatusOr<std::vector<AppendResult>> results = log_->AppendAll(std::move(batches));
    if (!results.ok()) Die(3, results.status().ToString());
    if (results->size() != kReadingPartitions) Die(4, "AppendAll returned the wrong count");
    for (int k = 0; k < kReadingPartitions; ++k) CheckReadings((*results)[k], k, n[k], 0);
  }

  void AppendCaseAlone() {
    AppendBatch batch{kCasePartition};
    const uint64_t next = log_->NextSequence(kCasePartition).value();
    // Every third time, repeat a stored key (a client retrying a command that went
    // through): it must come back as a duplicate of the original.
    std::string repeated_stream;
    uint64_t repeated_version = 0;
    if (Uniform(3) == 0) {
      repeated_stream = absl::StrCat("case/", Uniform(kCases));
      absl::StatusOr<StreamVersion> current = log_->CurrentVersion(repeated_stream);
      if (!current.ok()) Die(3, current.status().ToString());
      if (current->value() == 0) return;
      repeated_version = 1 + Uniform(static_cast<uint32_t>(current->value()));
      const std::string key = absl::StrCat(repeated_stream, "/", repeated_version);
      batch.Add(testing::CaseUrgedEvent(repeated_stream.substr(5), key, "retried"));
      batch.SetCheckpoint({std::string(kStage), kernel::Sequence(next), "retry"});
      absl::StatusOr<AppendResult> result = log_->Append(std::move(batch));
      if (!result.ok()) Die(3, result.status().ToString());
      absl::StatusOr<std::vector<v1::Event>> original =
          log_->ReadStream(repeated_stream, StreamVersion(repeated_version), 1);
      if (!original.ok() || original->size() != 1) Die(4, "cannot read a stored case event");
      const kernel::EventPosition where{Partition(original->front().partition()),
                                        kernel::Sequence(original->front().sequence())};
      if (result->appended != 0 || result->duplicates != 1 || !result->outcomes[0].duplicate ||
          result->outcomes[0].position != where) {
        Die(4, absl::StrCat("repeated key ", key, " was not reported as a duplicate of ",
                            where.partition.value(), "/", where.sequence.value()));
      }
      return;
    }
    CaseStep step = AddCaseEvent(batch);
    batch.SetCheckpoint(
        {std::string(kStage), kernel::Sequence(next + 1), absl::StrCat("after ", step.stream)});
    absl::StatusOr<AppendResult> result = log_->Append(std::move(batch));
    if (!result.ok()) Die(3, result.status().ToString());
    if (result->appended != 1 || result->next != kernel::Sequence(next + 1)) {
      Die(4, "a case event alone in partition 2 was not appended");
    }
    CheckCaseStep(step, *result);
  }

  EventLog* log_;
  std::mt19937_64 rng_;
  int64_t next_offset_[kReadingPartitions] = {};
};

int Main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "hold") return Hold(args[1]);
  uint64_t seed = 0;
  if (args.size() != 4 || args[0] != "append" || !absl::SimpleAtoi(args[2], &seed) ||
      (args[3] != "sync" && args[3] != "buffered")) {
    Die(2, "usage: crash_appender hold <dir> | append <dir> <seed> <sync|buffered>");
  }
  std::unique_ptr<EventLog> log =
      OpenOrDie(args[1], args[3] == "sync" ? kernel::Durability::kSyncEachAppend
                                           : kernel::Durability::kBuffered);
  Appender appender(log.get(), seed);
  Print("ready");
  appender.Run();
}

}  // namespace
}  // namespace cityops

int main(int argc, char** argv) { return cityops::Main(argc, argv); }
