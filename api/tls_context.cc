#include "api/tls_context.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace cityops::api {

std::string OpenSslReason() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(e, text, sizeof(text));
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "no reason given" : out;
}

namespace {

// The whole file, or why it cannot be read ("No such file or directory", ...).
absl::StatusOr<std::string> ReadWhole(const std::string& path, const char* what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::string out;
  if (fd >= 0) {
    char chunk[16 * 1024];
    for (;;) {
      const ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n > 0) {
        out.append(chunk, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) {
        ::close(fd);
        return out;
      }
      break;
    }
  }
  const int error = errno;
  if (fd >= 0) ::close(fd);
  return absl::InvalidArgumentError(
      absl::StrFormat("cannot read the %s %s: %s", what, path, strerror(error)));
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Refuses to ask for a passphrase: nobody is there to type one.
int NoPassphrase(char*, int, int, void*) { return -1; }

std::string Subject(X509* cert) {
  BioPtr out(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(out.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

std::string Serial(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

absl::Time NotAfter(X509* cert) {
  tm t{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&t));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::Load(const std::string& cert_path,
                                                                   const std::string& key_path,
                                                                   Culprit* culprit) {
  Culprit ignored;
  if (culprit == nullptr) culprit = &ignored;
  *culprit = Culprit::kCertificate;
  ERR_clear_error();
  absl::StatusOr<std::string> cert_pem = ReadWhole(cert_path, "certificate");
  if (!cert_pem.ok()) return cert_pem.status();
  *culprit = Culprit::kKey;
  absl::StatusOr<std::string> key_pem = ReadWhole(key_path, "private key");
  if (!key_pem.ok()) return key_pem.status();
  *culprit = Culprit::kCertificate;

  BioPtr certs = MemoryBio(*cert_pem);
  X509Ptr cert(PEM_read_bio_X509(certs.get(), nullptr, NoPassphrase, nullptr));
  if (cert == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrFormat(
        "the certificate %s holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" "
        "block that parses); give the server's certificate there, then its chain",
        cert_path));
  }
  std::vector<X509Ptr> chain;
  for (;;) {
    X509Ptr next(PEM_read_bio_X509(certs.get(), nullptr, NoPassphrase, nullptr));
    if (next == nullptr) break;
    chain.push_back(std::move(next));
  }
  // The end of the file ends the chain; anything else is a damaged certificate.
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    const std::string reason = OpenSslReason();
    return absl::InvalidArgumentError(
        absl::StrFormat("the certificate %s: certificate %d of its chain does not parse (%s)",
                        cert_path, chain.size() + 2, reason));
  }
  ERR_clear_error();

  *culprit = Culprit::kKey;
  BioPtr key_bio = MemoryBio(*key_pem);
  KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrFormat(
        "the private key %s holds no PEM private key the daemon can read (an encrypted key "
        "cannot be: nobody is there to type its passphrase; store it unencrypted, mode 0600)",
        key_path));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrFormat(
        "the private key %s does not match the certificate %s: give the key the certificate "
        "was issued for (compare `openssl x509 -noout -pubkey -in %s` with `openssl pkey "
        "-pubout -in %s`)",
        key_path, cert_path, cert_path, key_path));
  }

  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    return absl::InternalError("cannot make a TLS context: " + OpenSslReason());
  }
  std::shared_ptr<TlsContext> out(new TlsContext());
  out->ctx_ = ctx;
  out->cert_path_ = cert_path;
  out->key_path_ = key_path;
  out->subject_ = Subject(cert.get());
  out->serial_ = Serial(cert.get());
  out->not_after_ = NotAfter(cert.get());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Partial writes, retried from a buffer that may move (the serving thread's stream
  // writes what httplib hands it); an idle connection keeps no read or write buffer.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  bool loaded = SSL_CTX_use_certificate(ctx, cert.get()) == 1;
  for (X509Ptr& c : chain) {
    loaded = loaded && SSL_CTX_add1_chain_cert(ctx, c.get()) == 1;
  }
  loaded =
      loaded && SSL_CTX_use_PrivateKey(ctx, key.get()) == 1 && SSL_CTX_check_private_key(ctx) == 1;
  if (!loaded) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the certificate %s and key %s do not make a TLS context: %s (a key too weak for "
        "OpenSSL's security level, e.g. RSA under 2048 bits, is refused)",
        cert_path, key_path, OpenSslReason()));
  }
  return std::shared_ptr<const TlsContext>(std::move(out));
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::string TlsContext::Describe() const {
  return absl::StrFormat(
      "subject %s, serial %s, valid until %s", subject_, serial_,
      absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", not_after_, absl::UTCTimeZone()));
}

}  // namespace cityops::api
