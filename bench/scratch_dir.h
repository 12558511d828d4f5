// A scratch directory for a benchmark run, shared by the benches.
#ifndef CITYOPS_BENCH_SCRATCH_DIR_H_
#define CITYOPS_BENCH_SCRATCH_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"

namespace cityops::bench {

// A scratch directory: created fresh (or given by the user, then kept), removed at exit
// when we created it, also when the run fails.
class ScratchDir {
 public:
  // `prefix` names it, e.g. "cityops-log-bench-XXXXXX".
  explicit ScratchDir(std::string dir, const char* prefix = "cityops-bench-XXXXXX")
      : path_(std::move(dir)) {
    if (path_.empty()) {
      std::string pattern = (std::filesystem::temp_directory_path() / prefix).string();
      if (mkdtemp(pattern.data()) == nullptr) {
        throw std::runtime_error(absl::StrCat("cannot create a scratch directory ", pattern,
                                              "; pass --dir or set TMPDIR"));
      }
      path_ = pattern;
      owned_ = true;
    }
  }
  ~ScratchDir() {
    if (!owned_) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  bool owned() const { return owned_; }

 private:
  std::string path_;
  bool owned_ = false;
};

}  // namespace cityops::bench

#endif  // CITYOPS_BENCH_SCRATCH_DIR_H_
