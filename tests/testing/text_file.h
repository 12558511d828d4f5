// Reading a whole file, and counting in text: what tests check of logs and outputs.
#ifndef CITYOPS_TESTS_TESTING_TEXT_FILE_H_
#define CITYOPS_TESTS_TESTING_TEXT_FILE_H_

#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>

namespace cityops::testing {

// The whole file at `path`, byte for byte ("" if it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// How often `needle` occurs in `text`, overlaps counted.
inline size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_TEXT_FILE_H_
