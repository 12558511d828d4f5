// A latency histogram with fixed buckets, for Prometheus-style metrics.
//
// Record() is lock-free (one relaxed atomic add per bucket hit, plus the count and the
// sum), so a hot path can record every call. Snapshot() reads the buckets without
// stopping writers: a snapshot taken during a Record() may count it in `count` but not
// yet in its bucket, which Prometheus tolerates (the next scrape is exact again).
//
// Durations here are measurements of how long the machine took (std::chrono's steady
// clock), not domain time: they never reach the event log.
#ifndef CITYOPS_KERNEL_LATENCY_HISTOGRAM_H_
#define CITYOPS_KERNEL_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace cityops::kernel {

class LatencyHistogram {
 public:
  // Upper bounds of the buckets in microseconds: 50 µs .. 10 s, roughly ×2.5 apart. An
  // fsync on this class of machine takes about 300 µs; a batch of 1000 about 1 ms.
  static constexpr std::array<int64_t, 16> kBoundsMicros = {
      50,     100,    250,     500,     1'000,   2'500,     5'000,     10'000,
      25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 10'000'000};

  struct Snapshot {
    // cumulative[i]: observations <= kBoundsMicros[i]; the +Inf bucket is `count`.
    std::array<uint64_t, kBoundsMicros.size()> cumulative{};
    uint64_t count = 0;
    double sum_seconds = 0;
  };

  void Record(std::chrono::nanoseconds elapsed) {
    const int64_t micros = std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count();
    size_t i = 0;
    while (i < kBoundsMicros.size() && micros > kBoundsMicros[i]) ++i;
    if (i < kBoundsMicros.size()) buckets_[i].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_nanos_.fetch_add(static_cast<uint64_t>(elapsed.count()), std::memory_order_relaxed);
  }

  Snapshot Read() const {
    Snapshot s;
    uint64_t running = 0;
    for (size_t i = 0; i < kBoundsMicros.size(); ++i) {
      running += buckets_[i].load(std::memory_order_relaxed);
      s.cumulative[i] = running;
    }
    s.count = count_.load(std::memory_order_relaxed);
    if (s.count < running) s.count = running;
    s.sum_seconds = static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, kBoundsMicros.size()> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_nanos_{0};
};

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_LATENCY_HISTOGRAM_H_
