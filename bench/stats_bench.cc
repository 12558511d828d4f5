// The evaluation figures (projections/evaluation.h: `cityops stats`, GET
// /api/v1/statistics?from=&to=&by=) on an existing log, against the least any evaluation
// from the case index does, in one run:
//   bare read    EventLog::ListStreams("case/") and ReadStream of every case stream;
//   evaluate     projections::Evaluate of the whole log by department, as `cityops stats`;
//   cached       the same with a CaseStreamCache, as the daemon answers: the first answer
//                (the cache empty) and the next one (nothing changed since).
// Point it at a copy of a demo's data directory (`cityops demo --devices 10000`, then
// Ctrl-C): a log needs cases for this to mean anything. Prints seconds and cases/s.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "kernel/event_log.h"
#include "projections/evaluation.h"

namespace cityops::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

int Run(const std::string& data_dir, const std::string& by, int rounds) {
  absl::StatusOr<std::unique_ptr<kernel::EventLog>> log =
      kernel::EventLog::Open({.path = data_dir, .create_if_missing = false});
  if (!log.ok()) {
    std::fprintf(stderr, "stats_bench: %s\n", std::string(log.status().message()).c_str());
    return 1;
  }
  auto line = [](const char* what, double s, uint64_t cases) {
    std::printf("%-28s %8.3f s  %10.0f cases/s\n", what, s, s > 0 ? cases / s : 0.0);
  };
  for (int round = 0; round < rounds; ++round) {
    std::printf("round %d\n", round + 1);
    auto start = SteadyClock::now();
    uint64_t cases = 0, events = 0;
    std::vector<std::pair<std::string, kernel::StreamVersion>> streams;
    if (!(*log)
             ->ListStreams("case/",
                           [&](std::string_view id, kernel::StreamVersion v) {
                             streams.emplace_back(std::string(id), v);
                             return true;
                           })
             .ok()) {
      return 1;
    }
    for (const auto& [id, v] : streams) {
      absl::StatusOr<std::vector<v1::Event>> e =
          (*log)->ReadStream(id, kernel::StreamVersion(1), v.value());
      if (!e.ok()) return 1;
      ++cases;
      events += e->size();
    }
    line("bare read of case streams", Seconds(start), cases);
    std::printf("  (%llu cases, %llu events)\n", static_cast<unsigned long long>(cases),
                static_cast<unsigned long long>(events));

    projections::EvaluationRequest request;
    request.by = by;
    start = SteadyClock::now();
    absl::StatusOr<v1::Evaluation> e = projections::Evaluate(**log, request);
    if (!e.ok()) {
      std::fprintf(stderr, "stats_bench: %s\n", std::string(e.status().message()).c_str());
      return 1;
    }
    line("evaluate (cityops stats)", Seconds(start), e->cases_read());

    projections::CaseStreamCache cache;
    request.cache = &cache;
    for (const char* what : {"daemon, cache empty", "daemon, cache warm"}) {
      start = SteadyClock::now();
      e = projections::Evaluate(**log, request);
      if (!e.ok()) return 1;
      line(what, Seconds(start), e->cases_read());
    }
    std::printf("  cache holds %zu events\n", cache.events());
  }
  return 0;
}

}  // namespace
}  // namespace cityops::bench

int main(int argc, char** argv) {
  CLI::App app("stats_bench: the evaluation figures on an existing log, against a bare read");
  std::string data_dir, by = "department";
  int rounds = 2;
  app.add_option("--data-dir", data_dir, "A log with cases (a copy of a demo's data directory)")
      ->required();
  app.add_option("--by", by, "Breakdown")->capture_default_str();
  app.add_option("--rounds", rounds, "Rounds (the first runs on a cold OS cache)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return cityops::bench::Run(data_dir, by, rounds);
}
