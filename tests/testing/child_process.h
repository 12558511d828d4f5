// A child process for tests: started with posix_spawn (no shell), its stdin and stdout
// connected to pipes, its stderr shared with the test so that its complaints show up in
// the test's output. Killed and reaped when the object goes away.
//
// Header-only and free of Catch2; errors throw std::runtime_error.
#ifndef CITYOPS_TESTS_TESTING_CHILD_PROCESS_H_
#define CITYOPS_TESTS_TESTING_CHILD_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern char** environ;

namespace cityops::testing {

class ChildProcess {
 public:
  // Starts `argv[0]` (a path, not looked up in PATH) with `argv`. With `stderr_path`,
  // the child's stderr goes to that file (appended) instead of the test's.
  explicit ChildProcess(const std::vector<std::string>& argv, const std::string& stderr_path = "") {
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) Fail("pipe2");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // dup2 clears FD_CLOEXEC on the target; every other pipe end closes on exec.
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    if (!stderr_path.empty()) {
      posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(),
                                       O_WRONLY | O_CREAT | O_APPEND, 0644);
    }
    std::vector<std::string> args = argv;
    std::vector<char*> c_argv;
    for (std::string& a : args) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, c_argv[0], &actions, nullptr, c_argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_fd_ = in[1];
    stdout_fd_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error(absl::StrCat("posix_spawn ", argv[0], ": ", std::strerror(rc)));
    }
  }

  ~ChildProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (stdin_fd_ >= 0) ::close(stdin_fd_);
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }

  // Reads the child's stdout into `output()` until `deadline` or end of file. Returns
  // false once the child has closed its stdout.
  bool ReadUntil(absl::Time deadline) {
    while (stdout_fd_ >= 0) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return true;
      pollfd p{stdout_fd_, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) Fail("poll");
      if (n == 0) continue;
      if (!ReadSome()) return false;
    }
    return false;
  }

  // Reads until a line equal to `line` has arrived (true) or `timeout` passes or the
  // child closes its stdout (false).
  bool WaitForLine(std::string_view line, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    const std::string wanted = std::string(line) + "\n";
    for (;;) {
      if (output_.starts_with(wanted) || output_.find(absl::StrCat("\n", wanted)) != output_.npos) {
        return true;
      }
      if (absl::Now() >= deadline) return false;
      pollfd p{stdout_fd_, POLLIN, 0};
      const int n =
          ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now())) + 1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) Fail("poll");
      if (n > 0 && !ReadSome()) return output_.find(wanted) != output_.npos;
    }
  }

  // Reads the rest of stdout (the child must be gone or about to close it).
  void ReadToEnd() {
    while (stdout_fd_ >= 0 && ReadSome()) {
    }
  }

  const std::string& output() const { return output_; }

  void CloseStdin() {
    if (stdin_fd_ >= 0) ::close(stdin_fd_);
    stdin_fd_ = -1;
  }

  void Kill(int signal) { ::kill(pid_, signal); }

  // Reaps the child and returns its wait status (see WIFEXITED etc.).
  int Wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) Fail("waitpid");
    }
    reaped_ = true;
    return status;
  }

  static std::string DescribeWaitStatus(int status) {
    if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
    return absl::StrCat("wait status ", status);
  }

 private:
  // One read(); false at end of file.
  bool ReadSome() {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) Fail("read");
      if (n == 0) {
        ::close(stdout_fd_);
        stdout_fd_ = -1;
        return false;
      }
      output_.append(buf, static_cast<size_t>(n));
      return true;
    }
  }

  [[noreturn]] static void Fail(const char* what) {
    throw std::runtime_error(absl::StrCat(what, ": ", std::strerror(errno)));
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string output_;
};

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_CHILD_PROCESS_H_
