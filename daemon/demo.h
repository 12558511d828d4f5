// `cityops demo`: the whole system on one machine, for a first look and for the
// dashboard's tests.
//
// It runs the daemon (daemon.h) with the embedded Kafka cluster, a simulated city playing
// a scenario (sim/) into it in accelerated time, and a simulated crew of operators who
// work the cases through the case workflow as people would:
//   * street centers register and dispatch the reports they file (12345 hotline and
//     patrol reports, a few per simulated hour), verify the handling and close them;
//   * departments handle dispatched cases: most within their deadline, some late
//     (yellow), a few not at all (red), by a fixed plan per case id;
//   * district supervisors urge a case once it turns red.
// Every action is an event with its actor, exactly as if it came through the API.
//
// Time. Simulated time starts at the later of now and the end of what the data directory
// already holds (so a second run continues the first) and runs `acceleration` times as
// fast as the wall clock; ingest's clock ticks, the rules and the crew all follow it. The
// typhoon builds for about 40 simulated minutes, peaks from 80 to 170 and is calm after
// 300; the city then goes on reporting as on a normal day until the demo stops.
#ifndef CITYOPS_DAEMON_DEMO_H_
#define CITYOPS_DAEMON_DEMO_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "cityops/v1/config.pb.h"

namespace cityops::daemon {

struct DemoOptions {
  std::string data_dir = "cityops-data";
  std::string listen_address = "127.0.0.1";
  // Plain HTTP beyond loopback (http.allow_plaintext): refused without it.
  bool allow_plaintext = false;
  int port = 8080;  // 0: any free port.
  uint32_t devices = 10'000;
  std::string scenario = "typhoon";  // normal, typhoon or elevator-wave.
  double acceleration = 120;         // Simulated seconds per wall second.
  uint64_t seed = 1;
  bool crew = true;
  uint32_t partitions = 4;
  v1::LoggingConfig logging;
};

class Demo {
 public:
  // Starts the daemon, the simulator and the crew; announces the addresses and the
  // tokens on `announce`.
  static absl::StatusOr<std::unique_ptr<Demo>> Start(const DemoOptions& options,
                                                     std::ostream* announce);
  ~Demo();

  // Blocks until RequestStop() or a failure; then stops everything cleanly.
  absl::Status Wait();
  void RequestStop();

 private:
  class Impl;
  explicit Demo(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_DEMO_H_
