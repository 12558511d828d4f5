// Conversions between absl::Time and google.protobuf.Timestamp, and between
// absl::Duration and google.protobuf.Duration, for every part of cityops that stamps or
// reads event times and allowances.
#ifndef CITYOPS_KERNEL_PROTO_TIME_H_
#define CITYOPS_KERNEL_PROTO_TIME_H_

#include <cstdint>

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace cityops::kernel {

// `t` to the nanosecond (Timestamp's resolution), into `out`.
inline void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t seconds = absl::ToUnixSeconds(t);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
}

inline google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  SetTimestamp(t, &ts);
  return ts;
}

inline absl::Time FromTimestamp(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// `d` to the nanosecond (Duration's resolution), into `out`. Seconds and nanos get the
// same sign, as Duration requires. Infinite durations are out of Duration's range; the
// caller must not pass them.
inline void ToDurationProto(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

inline absl::Duration FromDurationProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Times in snapshots (proto/cityops/v1/snapshot.proto): whole nanoseconds since the Unix
// epoch, the minimum int64 standing for absl::InfinitePast() ("never"). False, leaving
// `*ns` alone, if `t` is not exactly representable (finer than a nanosecond, out of
// range, or InfiniteFuture).
inline constexpr int64_t kNeverNanos = INT64_MIN;
inline bool TimeToExactNanos(absl::Time t, int64_t* ns) {
  if (t == absl::InfinitePast()) {
    *ns = kNeverNanos;
    return true;
  }
  const int64_t n = absl::ToUnixNanos(t);
  if (n == kNeverNanos || absl::FromUnixNanos(n) != t) return false;
  *ns = n;
  return true;
}
inline absl::Time TimeFromExactNanos(int64_t ns) {
  return ns == kNeverNanos ? absl::InfinitePast() : absl::FromUnixNanos(ns);
}

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_PROTO_TIME_H_
