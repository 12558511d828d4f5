// What every fuzz target of fuzz/ checks besides "no crash": a broken invariant prints
// what broke and aborts, which libFuzzer reports as a crash (and saves the input).
#ifndef CITYOPS_FUZZ_FUZZ_CHECK_H_
#define CITYOPS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace cityops::fuzz {

inline void Require(bool ok, const char* what, const std::string& detail = "") {
  if (ok) return;
  std::fprintf(stderr, "fuzz: invariant broken: %s %s\n", what, detail.c_str());
  std::abort();
}

// A refusal is `code` with a message that says something.
inline void RequireRefusal(const absl::Status& s, absl::StatusCode code) {
  Require(s.code() == code, "refused with an unexpected code:", s.ToString());
  Require(!s.message().empty(), "refused without a message");
}

// A file the loader refused: INVALID_ARGUMENT with a message that starts with the
// file's name (and, from there, its line and column).
inline void RequireFileRefusal(const absl::Status& s, absl::string_view file) {
  RequireRefusal(s, absl::StatusCode::kInvalidArgument);
  Require(absl::StartsWith(s.message(), file),
          "an error without the file name:", std::string(s.message()));
}

}  // namespace cityops::fuzz

#endif  // CITYOPS_FUZZ_FUZZ_CHECK_H_
