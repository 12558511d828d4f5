// analysis/progress.h: the progress line, stop requests and whole-or-nothing output files.
#include "analysis/progress.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "catch2/catch.hpp"
#include "kernel/clock.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/text_file.h"

namespace cityops::analysis {
namespace {

using testing::ReadFile;

TEST_CASE("numbers and durations are written for people") {
  CHECK(WithThousands(0) == "0");
  CHECK(WithThousands(999) == "999");
  CHECK(WithThousands(1000) == "1,000");
  CHECK(WithThousands(1234567) == "1,234,567");
  CHECK(HumanDuration(absl::Milliseconds(12400)) == "12.4 s");
  CHECK(HumanDuration(absl::Seconds(185)) == "3 min 05 s");
  CHECK(HumanDuration(absl::Seconds(3720)) == "1 h 02 min");
}

TEST_CASE("plain progress prints a line per interval with the rate and the time left") {
  kernel::ManualClock clock(absl::FromUnixSeconds(1'800'000'000));
  std::ostringstream out;
  Progress progress(out, {.what = "export",
                          .total = 1000,
                          .style = ProgressOptions::Style::kPlain,
                          .every = absl::Seconds(5),
                          .clock = &clock});
  progress.Advance(100);
  CHECK(out.str().empty());  // Not 5 s yet.
  clock.Advance(absl::Seconds(5));
  progress.Advance(150);  // 250 in 5 s: 50/s, 750 left: 15 s.
  CHECK(out.str() == "export:  25.0% 250/1,000 events, 15.0 s left, 50/s\n");
  clock.Advance(absl::Seconds(5));
  progress.Advance(750);
  const std::string last = progress.Finish();
  CHECK(last == "export: 1,000 events in 10.0 s (100/s)");
  CHECK(progress.Finish() == last);  // Only once.
}

TEST_CASE("terminal progress redraws one line and ends it") {
  kernel::ManualClock clock(absl::FromUnixSeconds(1'800'000'000));
  std::ostringstream out;
  {
    Progress progress(out, {.what = "replay",
                            .total = 0,
                            .style = ProgressOptions::Style::kTerminal,
                            .every = absl::Milliseconds(200),
                            .clock = &clock});
    clock.Advance(absl::Seconds(1));
    progress.Advance(10);
    CHECK(out.str() == "\rreplay: 10 events, 10/s\x1b[K");
  }
  // Destroyed without Finish (an error): the terminal is left on a fresh line.
  CHECK(out.str().back() == '\n');
}

TEST_CASE("an output file appears only when committed") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/out.jsonl";
  std::ostringstream fallback;
  {
    auto file = OutputFile::Create(path, fallback);
    REQUIRE(file.ok());
    (*file)->stream() << "half a line";
    CHECK_FALSE(std::filesystem::exists(path));
  }  // Abandoned: Ctrl-C or an error.
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(std::filesystem::is_empty(dir.path()));
  {
    auto file = OutputFile::Create(path, fallback);
    REQUIRE(file.ok());
    (*file)->stream() << "{\"a\":1}\n";
    REQUIRE((*file)->Commit().ok());
  }
  CHECK(ReadFile(path) == "{\"a\":1}\n");
  CHECK(fallback.str().empty());

  auto to_stdout = OutputFile::Create("-", fallback);
  REQUIRE(to_stdout.ok());
  (*to_stdout)->stream() << "line\n";
  REQUIRE((*to_stdout)->Commit().ok());
  CHECK(fallback.str() == "line\n");

  auto nowhere = OutputFile::Create(dir.path() + "/missing/out.csv", fallback);
  REQUIRE_FALSE(nowhere.ok());
  CHECK(nowhere.status().message().find("missing/out.csv") != std::string::npos);
}

TEST_CASE("a stop request is seen by the run and cleared by the next one") {
  {
    StopScope stop;
    CHECK_FALSE(stop.requested());
    RequestStop();
    CHECK(stop.requested());
    CHECK(StopScope::Stopped("nothing was written").code() == absl::StatusCode::kCancelled);
  }
  StopScope next;
  CHECK_FALSE(next.requested());
}

TEST_CASE("times on the command line are RFC 3339, with a clear error otherwise") {
  auto t = ParseTimeFlag("--at", "2026-09-21T19:40:00+08:00");
  REQUIRE(t.ok());
  CHECK(*t == absl::FromUnixSeconds(1789990800));
  auto bad = ParseTimeFlag("--at", "yesterday");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("--at 'yesterday' is not an RFC 3339 time") !=
        std::string::npos);
}

}  // namespace
}  // namespace cityops::analysis
