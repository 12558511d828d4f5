// What the benches measure with: wall and CPU seconds, waiting for RocksDB's background
// work to settle before timing, and peak memory. Header-only.
#ifndef CITYOPS_BENCH_MEASURE_H_
#define CITYOPS_BENCH_MEASURE_H_

#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <thread>

namespace cityops::bench {

using SteadyClock = std::chrono::steady_clock;

inline double Seconds(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

// CPU seconds this process has used (all threads, RocksDB's background ones included).
inline double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(usage.ru_utime) + s(usage.ru_stime);
}

// CPU seconds the calling thread has used.
inline double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Waits until the process is idle (RocksDB's flushes and compactions after a fill are
// done: under 2 % of a core for a second), at most `limit` seconds. Timing while they run
// would charge what is measured for the fill. Returns the seconds waited.
inline double WaitUntilIdle(double limit) {
  const auto start = SteadyClock::now();
  while (Seconds(start) < limit) {
    const double before = CpuSeconds();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    if (CpuSeconds() - before < 0.02) break;
  }
  return Seconds(start);
}

// Peak resident memory, MiB.
inline double PeakRssMiB() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024;
}

}  // namespace cityops::bench

#endif  // CITYOPS_BENCH_MEASURE_H_
