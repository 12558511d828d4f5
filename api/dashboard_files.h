// The dashboard's static files (api/dashboard/), compiled into the binary at build time
// (cmake/embed_files.cmake), so the daemon serves them wherever it runs, offline.
#ifndef CITYOPS_API_DASHBOARD_FILES_H_
#define CITYOPS_API_DASHBOARD_FILES_H_

#include <span>
#include <string_view>

namespace cityops::api {

struct StaticFile {
  std::string_view path;  // "/index.html", "/app.js", ...
  std::string_view content_type;
  std::string_view body;
};

std::span<const StaticFile> DashboardFiles();

}  // namespace cityops::api

#endif  // CITYOPS_API_DASHBOARD_FILES_H_
