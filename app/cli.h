// The `cityops` command line: parses argv (CLI11), calls the command's function and
// turns its result into an exit code. The only place that knows the command syntax.
//
// Exit codes: 0 success (and --help, --version); 1 the command failed (its message on
// `err` as "cityops: <message>"); 2 a usage error (unknown option, missing or
// out-of-range value), with a pointer to the right --help.
#ifndef CITYOPS_APP_CLI_H_
#define CITYOPS_APP_CLI_H_

#include <ostream>

namespace cityops::app {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Runs the command given by `argv`. Command output goes to `out`; errors, notes and
// usage problems to `err`. Never throws.
int RunCli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace cityops::app

#endif  // CITYOPS_APP_CLI_H_
