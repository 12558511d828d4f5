// Department names, as cases carry them when dispatched (CaseDispatched.department) and
// department crews carry them in their unit (OrgUnit.department). Header-only, so that
// the configuration's and the record decoder's checks (daemon/config.cc and
// ingest/record_decoder.cc, each also built alone into a fuzz target) use it without
// linking anything.
#ifndef CITYOPS_KERNEL_DEPARTMENT_H_
#define CITYOPS_KERNEL_DEPARTMENT_H_

#include <string_view>

namespace cityops::kernel {

// True if `name` is a department's name: lowercase words (of letters and digits) joined by
// single '-', starting with a letter, at most 64 characters; e.g. "water-authority".
inline bool IsDepartmentName(std::string_view name) {
  auto lower = [](char c) { return c >= 'a' && c <= 'z'; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (name.empty() || name.size() > 64 || !lower(name.front())) return false;
  char previous = 0;
  for (char c : name) {
    if (!lower(c) && !digit(c) && c != '-') return false;
    if (c == '-' && previous == '-') return false;
    previous = c;
  }
  return name.back() != '-';
}

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_DEPARTMENT_H_
