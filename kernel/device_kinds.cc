#include "kernel/device_kinds.h"

namespace cityops::kernel {

absl::Duration DefaultReportingInterval(v1::DeviceKind kind) {
  switch (kind) {
    case v1::DEVICE_KIND_MANHOLE_COVER:
      return absl::Hours(6);
    case v1::DEVICE_KIND_ELEVATOR:
      return absl::Seconds(10);
    case v1::DEVICE_KIND_CURTAIN_WALL:
      return absl::Minutes(10);
    case v1::DEVICE_KIND_FLOOD_GAUGE:
      return absl::Minutes(5);
    default:
      return absl::Hours(1);
  }
}

}  // namespace cityops::kernel
