// Throwaway TLS certificates for tests of HTTPS (api/tls_context.h, the daemon's http.tls),
// made with OpenSSL's C API, and the certificate a server presents.
//
//   testing::TempDir dir;
//   const testing::TestCertificate cert =
//       testing::WriteSelfSignedCertificate(dir.Sub("cert.pem"), dir.Sub("key.pem"), 1001);
//   ... http: {tls: {cert: <cert.cert_path>, key: <cert.key_path>}} ...
//   CHECK(testing::PeerCertificate(port).serial == cert.serial);
//
// A certificate is self-signed, so it is its own authority: a client checks a server
// against it (httplib's set_ca_cert_path, curl's --cacert). It names 127.0.0.1 and
// localhost (subjectAltName), as a client that checks the host wants. Keys are P-256
// (fresh from OpenSSL's random generator); serials and validity are the caller's.
//
// Header-only and free of Catch2; errors throw std::runtime_error. Link OpenSSL::SSL.
#ifndef CITYOPS_TESTS_TESTING_TLS_FILES_H_
#define CITYOPS_TESTS_TESTING_TLS_FILES_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cityops::testing {

struct TestCertificate {
  std::string cert_path;
  std::string key_path;
  std::string serial;    // Hex, as OpenSSL prints it (BN_bn2hex): "3E9" for 1001.
  std::string subject;   // "CN=<common name>".
  absl::Time not_after;  // Whole seconds.
};

namespace tls_files_internal {

[[noreturn]] inline void Fail(const std::string& what) {
  char reason[256] = "no reason given";
  if (const unsigned long e = ERR_get_error()) ERR_error_string_n(e, reason, sizeof(reason));
  ERR_clear_error();
  throw std::runtime_error(absl::StrCat(what, ": ", reason));
}

inline std::string SerialHex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

inline std::string SubjectText(X509* cert) {
  BIO* out = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(out, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string text = n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
  BIO_free(out);
  return text;
}

inline void WritePem(const std::string& path, bool private_key,
                     const std::function<int(FILE*)>& write) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  const int ok = write(f);
  std::fclose(f);
  if (ok != 1) Fail("cannot write PEM to " + path);
  namespace fs = std::filesystem;
  fs::permissions(path,
                  private_key ? fs::perms::owner_read | fs::perms::owner_write
                              : fs::perms::owner_read | fs::perms::owner_write |
                                    fs::perms::group_read | fs::perms::others_read,
                  fs::perm_options::replace);
}

}  // namespace tls_files_internal

// A fresh P-256 key (mode 0600 at `key_path`) and a self-signed certificate for it (0644 at
// `cert_path`): subject CN=`common_name`, serial `serial`, valid from an hour ago for
// `valid_for`, subjectAltName IP:127.0.0.1 and DNS:localhost. Replaces both files.
inline TestCertificate WriteSelfSignedCertificate(const std::string& cert_path,
                                                  const std::string& key_path, uint64_t serial,
                                                  const std::string& common_name = "cityops-test",
                                                  absl::Duration valid_for = absl::Hours(24 * 30)) {
  using tls_files_internal::Fail;
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) Fail("cannot generate a P-256 key");
  X509* cert = X509_new();
  X509_set_version(cert, 2);  // v3, for the extension.
  ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serial);
  const time_t now = absl::ToTimeT(absl::Now());
  const time_t from = now - 3600;
  const time_t until = now + absl::ToInt64Seconds(valid_for);
  ASN1_TIME_set(X509_getm_notBefore(cert), from);
  ASN1_TIME_set(X509_getm_notAfter(cert), until);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert, name);
  X509_set_pubkey(cert, key);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* san =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
  if (san == nullptr || X509_add_ext(cert, san, -1) != 1) Fail("cannot add subjectAltName");
  X509_EXTENSION_free(san);
  if (X509_sign(cert, key, EVP_sha256()) == 0) Fail("cannot sign the certificate");
  tls_files_internal::WritePem(key_path, true, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
  tls_files_internal::WritePem(cert_path, false, [&](FILE* f) { return PEM_write_X509(f, cert); });
  TestCertificate out;
  out.cert_path = cert_path;
  out.key_path = key_path;
  out.serial = tls_files_internal::SerialHex(X509_get0_serialNumber(cert));
  out.subject = tls_files_internal::SubjectText(cert);
  out.not_after = absl::FromTimeT(until);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

// What a TLS server on 127.0.0.1:`port` presents to a new connection (not verified).
struct PeerCertificateInfo {
  std::string serial;
  std::string subject;
};

// Connects, completes a TLS handshake (within 10 s) and reads the server's certificate.
inline PeerCertificateInfo PeerCertificate(int port) {
  using tls_files_internal::Fail;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(fd);
    throw std::runtime_error(absl::StrCat("cannot connect to 127.0.0.1:", port));
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  PeerCertificateInfo out;
  const bool connected = SSL_connect(ssl) == 1;
  X509* cert = connected ? SSL_get1_peer_certificate(ssl) : nullptr;
  if (cert != nullptr) {
    out.serial = tls_files_internal::SerialHex(X509_get0_serialNumber(cert));
    out.subject = tls_files_internal::SubjectText(cert);
    X509_free(cert);
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  if (!connected) Fail(absl::StrCat("no TLS handshake with 127.0.0.1:", port));
  if (out.serial.empty()) throw std::runtime_error("the server presented no certificate");
  return out;
}

}  // namespace cityops::testing

#endif  // CITYOPS_TESTS_TESTING_TLS_FILES_H_
