// Conversions between absl::Time and google.protobuf.Timestamp, for every part of
// cityops that stamps or reads event times.
#ifndef CITYOPS_KERNEL_PROTO_TIME_H_
#define CITYOPS_KERNEL_PROTO_TIME_H_

#include <cstdint>

#include "absl/time/time.h"
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

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_PROTO_TIME_H_
