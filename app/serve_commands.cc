#include "app/serve_commands.h"

#include <memory>

#include "absl/strings/str_format.h"
#include "catalogue/catalogue.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/logging.h"
#include "daemon/rule_activation.h"
#include "daemon/signals.h"
#include "spdlog/spdlog.h"

namespace cityops::app {

absl::Status ServeCommand(const ServeOptions& options, std::ostream& out) {
  // Before any thread exists, so that every thread inherits the mask.
  daemon::BlockDaemonSignals();
  // The certificate and key it names are loaded, too: errors at their line.
  absl::StatusOr<v1::ServeConfig> config = options.config.empty()
                                               ? daemon::DefaultServeConfig()
                                               : daemon::LoadServeConfig(options.config);
  if (!config.ok()) return config.status();
  // A file that holds tokens is the daemon user's alone: refused to start on, and
  // reported by --validate, when its group or others may read or write it.
  if (!options.config.empty()) {
    if (absl::Status s = daemon::CheckTokenFilePermissions(options.config, *config); !s.ok()) {
      return s;
    }
  }
  if (options.validate) {
    absl::StatusOr<rules::LoadedRuleSet> rules =
        daemon::LoadConfiguredRuleSet(config->rules().file(), config->catalogue().file());
    if (!rules.ok()) return rules.status();
    out << "# " << (options.config.empty() ? std::string("defaults") : options.config)
        << ": valid. The configuration in effect, every default filled in:\n"
        << daemon::DescribeServeConfig(*config)
        << absl::StrFormat("# rule set '%s' from %s: %d rules, sha256 %s\n", rules->rule_set.name(),
                           rules->source_path, rules->rule_set.rules_size(), rules->sha256);
    // Loaded and checked with the rule set already.
    absl::StatusOr<catalogue::LoadedCatalogue> c =
        catalogue::LoadConfiguredCatalogue(config->catalogue().file());
    if (!c.ok()) return c.status();
    out << absl::StrFormat(
        "# catalogue '%s' from %s: %d device kinds, %d case categories; the "
        "rule set fits it\n",
        c->catalogue.name(), c->source_path, c->catalogue.kinds_size(),
        c->catalogue.categories_size());
    return absl::OkStatus();
  }
  daemon::ConfigureLogging(config->logging());
  daemon::DaemonOptions daemon_options;
  daemon_options.config = *config;
  daemon_options.config_path = options.config;
  daemon_options.announce = &out;
  absl::StatusOr<std::unique_ptr<daemon::Daemon>> d = daemon::Daemon::Start(daemon_options);
  if (!d.ok()) return d.status();
  daemon::SignalWatcher signals([&] { (*d)->RequestStop(); },
                                [&] {
                                  if (absl::Status s = (*d)->ReloadTokens(); !s.ok()) {
                                    spdlog::error(
                                        "daemon: the tokens were not reloaded, the ones in "
                                        "use stay: {}",
                                        s.ToString());
                                  }
                                  if (absl::Status s = (*d)->ReloadTls(); !s.ok()) {
                                    spdlog::error(
                                        "daemon: the TLS certificate was not reloaded, the "
                                        "one in use stays: {}",
                                        s.ToString());
                                  }
                                  absl::StatusOr<v1::ReloadRulesResponse> r = (*d)->ReloadRules();
                                  if (!r.ok()) {
                                    spdlog::error(
                                        "daemon: the rule set was not reloaded, the "
                                        "active one stays: {}",
                                        r.status().ToString());
                                  }
                                });
  return (*d)->Wait();
}

absl::Status DemoCommand(const DemoCommandOptions& options, std::ostream& out) {
  daemon::BlockDaemonSignals();
  daemon::DemoOptions demo = options.demo;
  demo.logging.set_level(options.log_level);
  demo.logging.set_format("text");
  daemon::ConfigureLogging(demo.logging);
  absl::StatusOr<std::unique_ptr<daemon::Demo>> d = daemon::Demo::Start(demo, &out);
  if (!d.ok()) return d.status();
  daemon::SignalWatcher signals([&] { (*d)->RequestStop(); }, [] {});
  return (*d)->Wait();
}

}  // namespace cityops::app
