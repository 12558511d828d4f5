// Signals of a daemon run: SIGTERM and SIGINT stop it cleanly, SIGHUP reloads its tokens,
// its TLS certificate and its rules.
//
// Signals are taken synchronously on a thread of their own (sigtimedwait), never in an
// async handler. For that, every thread must block them: call BlockDaemonSignals() first
// thing, before any thread starts (librdkafka's included), so that all inherit the mask.
#ifndef CITYOPS_DAEMON_SIGNALS_H_
#define CITYOPS_DAEMON_SIGNALS_H_

#include <atomic>
#include <functional>
#include <thread>

namespace cityops::daemon {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread.
void BlockDaemonSignals();

// Watches for them until destroyed: `stop` on SIGTERM or SIGINT, `reload` on SIGHUP.
class SignalWatcher {
 public:
  SignalWatcher(std::function<void()> stop, std::function<void()> reload);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace cityops::daemon

#endif  // CITYOPS_DAEMON_SIGNALS_H_
