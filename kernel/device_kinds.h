// Facts about the four device kinds that more than one stage needs.
#ifndef CITYOPS_KERNEL_DEVICE_KINDS_H_
#define CITYOPS_KERNEL_DEVICE_KINDS_H_

#include "absl/time/time.h"
#include "cityops/v1/reading.pb.h"

namespace cityops::kernel {

// A kind's heartbeat, as such devices typically report in Chinese city IoT platforms:
// manhole covers 6 h, elevators 10 s, curtain walls 10 min, flood gauges 5 min (1 h for
// an unknown kind). The simulator reports at it; the device read model assumes it for a
// device whose registration names no interval (a device is offline after three). The
// default rule set's absence rules use the same figures (rules/default.yaml;
// tests/views_test.cc checks they agree).
absl::Duration DefaultReportingInterval(v1::DeviceKind kind);

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_DEVICE_KINDS_H_
