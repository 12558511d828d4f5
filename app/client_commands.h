// The work behind `cityops cases ...` and `cityops report`: clients of a running daemon's
// HTTP API (api/openapi.yaml), with a bearer token from the daemon's configuration.
//
// They own no logic: the daemon checks roles, units, stages and originators, and its
// error messages are passed on as they are. Each command takes its options as a plain
// struct (filled in by app/cli.cc), writes what it got to `out` (a readable table or
// summary, or with `json` the API's JSON as it came) and returns an absl::Status whose
// message is fit to show the user: the API's own message when the API refused, or what
// went wrong reaching it. The token is sent in the Authorization header and never
// written anywhere.
#ifndef CITYOPS_APP_CLIENT_COMMANDS_H_
#define CITYOPS_APP_CLIENT_COMMANDS_H_

#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace cityops::app {

inline constexpr char kDefaultServer[] = "http://127.0.0.1:8080";

struct ApiClientOptions {
  std::string server = kDefaultServer;  // http(s)://HOST[:PORT], no path.
  // https:// only: the PEM file of the certificate authority (or, for a self-signed
  // certificate, the certificate itself) the daemon's certificate is checked against.
  // Empty: the system's authorities. The certificate must name the server's host (its
  // subjectAltName, DNS name or IP address) either way.
  std::string ca;
  std::string token;
  bool json = false;  // Print the API's JSON instead of a summary.
};

struct CasesListOptions {
  ApiClientOptions api;
  // Filters, as the API takes them (empty: no filter). Stage, source and overdue by
  // their short names ("dispatched", "hotline_12345", "yellow"); times in RFC 3339.
  std::string stage;
  std::string source;
  std::string overdue;
  std::string grid;
  std::string reported_after;
  std::string reported_before;
  int page_size = 0;  // 0: the API's default.
  std::string page_token;
  bool all = false;  // Follow next_page_token to the last page.
};

// GET /api/v1/cases: a table of id, stage, light, source, category, grid, department
// and age, and the token of the next page if there is one (unless `all`).
absl::Status CasesListCommand(const CasesListOptions& options, std::ostream& out);

struct CasesShowOptions {
  ApiClientOptions api;
  std::string case_id;
};

// GET /api/v1/cases/{id}: the case, its timeline (who did what, when) and the time it
// spent in each stage.
absl::Status CasesShowCommand(const CasesShowOptions& options, std::ostream& out);

struct CaseCommandOptions {
  ApiClientOptions api;
  std::string command;  // "register", "dispatch", "handle", "verify", "close", "urge",
                        // "escalate".
  std::string case_id;
  std::string department;  // dispatch
  std::string level;       // dispatch: "street_center", ...; empty: the case's level.
  std::string result;      // handle
  bool pass = false;       // verify: exactly one of pass and fail.
  bool fail = false;
  std::string note;    // verify (required when failing), urge
  std::string reason;  // escalate
  // The idempotency key; empty: a fresh random one, so that running the command again
  // is a new command. Pass the same id to make a retry safe.
  std::string request_id;
};

// POST /api/v1/cases/{id}/{command}: only the fields the command takes are sent; the
// daemon refuses the rest.
absl::Status CaseCommandCommand(const CaseCommandOptions& options, std::ostream& out);

struct ReportOptions {
  ApiClientOptions api;
  std::string case_id;
  std::string source;  // "hotline_12345", "street_patrol" or "residential_station".
  std::string grid;    // The 15-digit residential grid code.
  std::string category;
  std::string category_name;
  std::string description;
  std::string reporter;
  std::optional<double> latitude_deg;
  std::optional<double> longitude_deg;
  std::string request_id;  // As for case commands.
};

// POST /api/v1/reports: a hotline, patrol or residential-station case. The caller's
// unit becomes its originator; the daemon's rules stage opens it a moment later.
absl::Status ReportCommand(const ReportOptions& options, std::ostream& out);

}  // namespace cityops::app

#endif  // CITYOPS_APP_CLIENT_COMMANDS_H_
