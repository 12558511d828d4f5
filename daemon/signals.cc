#include "daemon/signals.h"

#include <signal.h>

#include <ctime>
#include <utility>

#include "spdlog/spdlog.h"

namespace cityops::daemon {

namespace {

sigset_t DaemonSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void BlockDaemonSignals() {
  const sigset_t set = DaemonSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

SignalWatcher::SignalWatcher(std::function<void()> stop, std::function<void()> reload)
    : thread_([this, stop = std::move(stop), reload = std::move(reload)] {
        const sigset_t set = DaemonSignals();
        const timespec tick = {0, 200'000'000};
        while (!done_.load()) {
          const int sig = sigtimedwait(&set, nullptr, &tick);
          if (sig == SIGTERM || sig == SIGINT) {
            spdlog::info("daemon: {}: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            stop();
          } else if (sig == SIGHUP) {
            spdlog::info(
                "daemon: SIGHUP: re-reading the tokens and the TLS certificate, reloading the "
                "rule set");
            reload();
          }
        }
      }) {}

SignalWatcher::~SignalWatcher() {
  done_.store(true);
  thread_.join();
}

}  // namespace cityops::daemon
