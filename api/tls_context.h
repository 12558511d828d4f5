// The server's certificate and private key in an OpenSSL context (SSL_CTX), from which
// the front door (api/front_door.h) makes each TLS connection.
//
// Load() reads a PEM certificate chain (the server's certificate first, then any
// intermediates) and its PEM private key, and checks them: each file readable, the first
// holding certificates, the second an unencrypted private key that matches the first
// certificate. Each error names the file and what is wrong with it. The key file's mode is
// the daemon's to check (daemon/config.h), like the token file's.
//
// The context speaks TLS 1.2 and 1.3 (OpenSSL's default ciphers and groups), with no
// renegotiation, and releases a connection's buffers while it is idle. OpenSSL counts the
// references to a context: each connection made from it holds one, so a context replaced
// on SIGHUP lives on until the last connection that began with it has closed.
//
// Thread-safe: a loaded context is only read.
#ifndef CITYOPS_API_TLS_CONTEXT_H_
#define CITYOPS_API_TLS_CONTEXT_H_

#include <openssl/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cityops::api {

class TlsContext {
 public:
  // Which of the two files an error is about.
  enum class Culprit { kCertificate, kKey };

  // INVALID_ARGUMENT naming the file: unreadable (with the system's reason), holding no
  // PEM certificate or no PEM private key (an encrypted key counts as none: the daemon
  // starts without a person to type its passphrase), or a key that is not the
  // certificate's. `culprit`, if given, is set to the file the error is about.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> Load(const std::string& cert_path,
                                                                const std::string& key_path,
                                                                Culprit* culprit = nullptr);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // For SSL_new: OpenSSL takes a context as non-const, and takes its own reference.
  SSL_CTX* ssl_ctx() const { return ctx_; }

  const std::string& cert_path() const { return cert_path_; }
  const std::string& key_path() const { return key_path_; }
  // Of the server's certificate (the chain's first): its subject (RFC 2253, e.g.
  // "CN=ops.example"), its serial number in hex, and the end of its validity (notAfter).
  const std::string& subject() const { return subject_; }
  const std::string& serial() const { return serial_; }
  absl::Time not_after() const { return not_after_; }
  // "subject CN=ops.example, serial 1F, valid until 2027-01-01 00:00:00 UTC", for the log.
  std::string Describe() const;

 private:
  TlsContext() = default;

  SSL_CTX* ctx_ = nullptr;
  std::string cert_path_;
  std::string key_path_;
  std::string subject_;
  std::string serial_;
  absl::Time not_after_;
};

// OpenSSL's reasons for the last failures on this thread, joined with "; " ("no reason
// given" if there are none), for errors and the log. Empties the thread's error queue.
std::string OpenSslReason();

}  // namespace cityops::api

#endif  // CITYOPS_API_TLS_CONTEXT_H_
