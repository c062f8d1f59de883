#include "corral/net/pki.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <memory>

#include <boost/asio/ip/address.hpp>

#include "corral/base/files.h"
#include "corral/base/ids.h"

namespace corral::net {
namespace {

struct Free {
  void operator()(X509* x) const { X509_free(x); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(BIGNUM* b) const { BN_free(b); }
  void operator()(X509_REQ* r) const { X509_REQ_free(r); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

std::string ToPem(X509* cert) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string KeyToPem(EVP_PKEY* key) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Owned<X509> ParseCert(const std::string& pem) {
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Owned<X509>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

Owned<EVP_PKEY> ParseKey(const std::string& pem) {
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Owned<EVP_PKEY>(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A v3 certificate for `key` named `common_name`, with a random serial, valid from five minutes ago
// (clocks differ a little between machines) for `seconds`.
Owned<X509> NewCertificate(EVP_PKEY* key, const std::string& common_name, int64_t seconds) {
  Owned<X509> cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  Owned<BIGNUM> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kCertificateBackdateS);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(seconds));
  X509_set_pubkey(cert.get(), key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  return cert;
}

}  // namespace

Result<PemPair> CreateCa(const std::string& common_name, int days) {
  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return Err(Code::kInternal, "cannot generate an EC key");
  Owned<X509> cert = NewCertificate(key.get(), common_name, int64_t{days} * 86400);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  bool ok = AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
            AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign") &&
            AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  if (!ok || !X509_sign(cert.get(), key.get(), EVP_sha256()))
    return Err(Code::kInternal, "cannot make the CA certificate");
  return PemPair{ToPem(cert.get()), KeyToPem(key.get())};
}

Result<PemPair> IssueServerCertificate(const PemPair& ca, const std::vector<std::string>& names, int days) {
  Owned<X509> ca_cert = ParseCert(ca.certificate);
  Owned<EVP_PKEY> ca_key = ParseKey(ca.private_key);
  if (!ca_cert || !ca_key) return Err(Code::kInvalidArgument, "the CA certificate or key cannot be read");
  if (names.empty()) return Err(Code::kInvalidArgument, "a server certificate needs at least one name");
  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return Err(Code::kInternal, "cannot generate an EC key");
  Owned<X509> cert = NewCertificate(key.get(), names.front(), int64_t{days} * 86400);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  std::string sans;
  for (const auto& n : names) {
    boost::system::error_code ec;
    boost::asio::ip::make_address(n, ec);
    sans += (sans.empty() ? "" : ",") + std::string(ec ? "DNS:" : "IP:") + n;
  }
  bool ok = AddExtension(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            AddExtension(cert.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature") &&
            AddExtension(cert.get(), ca_cert.get(), NID_ext_key_usage, "serverAuth") &&
            AddExtension(cert.get(), ca_cert.get(), NID_authority_key_identifier, "keyid") &&
            AddExtension(cert.get(), ca_cert.get(), NID_subject_alt_name, sans);
  if (!ok || !X509_sign(cert.get(), ca_key.get(), EVP_sha256()))
    return Err(Code::kInternal, "cannot issue the server certificate");
  return PemPair{ToPem(cert.get()) + ToPem(ca_cert.get()), KeyToPem(key.get())};
}

Result<PemPair> CreateCertificateRequest(const std::string& common_name, const std::string& key_pem) {
  Owned<EVP_PKEY> key(key_pem.empty() ? EVP_EC_gen("P-256") : ParseKey(key_pem).release());
  if (!key) return Err(Code::kInternal, key_pem.empty() ? "cannot generate an EC key" : "the node's key cannot be read");
  Owned<X509_REQ> req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  if (!X509_REQ_sign(req.get(), key.get(), EVP_sha256())) return Err(Code::kInternal, "cannot sign the request");
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return PemPair{std::string(data, static_cast<size_t>(n)), KeyToPem(key.get())};
}

namespace {
// The request's public key once its signature checked out.
Result<Owned<EVP_PKEY>> RequestKey(const std::string& request_pem) {
  Owned<BIO> bio(BIO_new_mem_buf(request_pem.data(), static_cast<int>(request_pem.size())));
  Owned<X509_REQ> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return Err(Code::kInvalidArgument, "the certificate request is not a PEM request");
  Owned<EVP_PKEY> key(X509_REQ_get_pubkey(req.get()));
  if (!key || X509_REQ_verify(req.get(), key.get()) != 1)
    return Err(Code::kInvalidArgument, "the certificate request's signature does not match its key");
  return key;
}
}  // namespace

Result<std::string> RequestKeyFingerprint(const std::string& request_pem) {
  auto key = RequestKey(request_pem);
  if (!key) return Err(key.error());
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key->get(), &der);
  if (n <= 0) return Err(Code::kInternal, "cannot encode the request's key");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(der, static_cast<size_t>(n), md, &len, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  return "sha256:" + Hex(std::string_view(reinterpret_cast<const char*>(md), len));
}

Result<std::string> IssueNodeCertificate(const PemPair& ca, const std::string& request_pem,
                                         const std::string& common_name, int64_t seconds) {
  Owned<X509> ca_cert = ParseCert(ca.certificate);
  Owned<EVP_PKEY> ca_key = ParseKey(ca.private_key);
  if (!ca_cert || !ca_key) return Err(Code::kInvalidArgument, "the CA certificate or key cannot be read");
  auto key = RequestKey(request_pem);
  if (!key) return Err(key.error());
  Owned<X509> cert = NewCertificate(key->get(), common_name, seconds);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  bool ok = AddExtension(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            AddExtension(cert.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature") &&
            AddExtension(cert.get(), ca_cert.get(), NID_ext_key_usage, "clientAuth") &&
            AddExtension(cert.get(), ca_cert.get(), NID_authority_key_identifier, "keyid");
  if (!ok || !X509_sign(cert.get(), ca_key.get(), EVP_sha256()))
    return Err(Code::kInternal, "cannot issue the node certificate");
  return ToPem(cert.get()) + ToPem(ca_cert.get());
}

namespace {
int64_t UnixSeconds(const ASN1_TIME* t) {
  int days = 0, secs = 0;
  ASN1_TIME_diff(&days, &secs, nullptr, t);  // from now
  return static_cast<int64_t>(std::time(nullptr)) + int64_t{days} * 86400 + secs;
}
}  // namespace

Result<CertificateInfo> InspectCertificate(const std::string& pem) {
  Owned<X509> cert = ParseCert(pem);
  if (!cert) return Err(Code::kInvalidArgument, "not a PEM certificate");
  CertificateInfo info;
  char cn[256] = {};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn) > 0)
    info.common_name = cn;
  Owned<BIGNUM> serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  if (serial) {
    char* hex = BN_bn2hex(serial.get());
    info.serial = hex;
    OPENSSL_free(hex);
  }
  info.not_before_s = UnixSeconds(X509_get0_notBefore(cert.get()));
  info.not_after_s = UnixSeconds(X509_get0_notAfter(cert.get()));
  return info;
}

Result<std::string> Fingerprint(const std::string& certificate_pem) {
  Owned<X509> cert = ParseCert(certificate_pem);
  if (!cert) return Err(Code::kInvalidArgument, "not a PEM certificate");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!X509_digest(cert.get(), EVP_sha256(), md, &n)) return Err(Code::kInternal, "cannot hash the certificate");
  return "sha256:" + Hex(std::string_view(reinterpret_cast<const char*>(md), n));
}

std::vector<std::string> SplitPemCertificates(const std::string& pem) {
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    size_t begin = pem.find("-----BEGIN CERTIFICATE-----", pos);
    if (begin == std::string::npos) break;
    size_t end = pem.find(kEnd, begin);
    if (end == std::string::npos) break;
    out.push_back(pem.substr(begin, end + kEnd.size() - begin) + "\n");
    pos = end + kEnd.size();
  }
  return out;
}

Result<HeadPki> LoadOrCreateHeadPki(const std::string& dir, const std::vector<std::string>& names) {
  PemPair ca;
  auto cert = ReadFile(dir + "/ca.crt");
  auto key = ReadFile(dir + "/ca.key");
  if (cert && key) {
    ca = {*cert, *key};
  } else if (!cert && !key) {
    auto made = CreateCa("Corral cluster CA " + Hex(RandomBytes(4)));
    if (!made) return Err(made.error());
    ca = std::move(*made);
    // The key first: a crash in between leaves no certificate without its key.
    if (Status s = WriteFile(dir + "/ca.key", ca.private_key, 0600); !s.ok()) return Err(s);
    if (Status s = WriteFile(dir + "/ca.crt", ca.certificate, 0644); !s.ok()) return Err(s);
  } else {
    return Err(Code::kFailedPrecondition,
               fmt::format("{}/ca.crt and ca.key must both exist or both be absent (one is missing): restore it, "
                           "or remove both to make a new CA (every node then joins again)",
                           dir));
  }
  auto identity = RenewHeadCertificate(dir, ca, names);
  if (!identity) return Err(identity.error());
  auto fp = Fingerprint(ca.certificate);
  if (!fp) return Err(fp.error());
  return HeadPki{std::move(*identity), std::move(ca), *fp};
}

Result<PemPair> RenewHeadCertificate(const std::string& dir, const PemPair& ca, const std::vector<std::string>& names) {
  auto identity = IssueServerCertificate(ca, names);
  if (!identity) return Err(identity.error());
  if (Status s = WriteFile(dir + "/head.key", identity->private_key, 0600); !s.ok()) return Err(s);
  if (Status s = WriteFile(dir + "/head.crt", identity->certificate, 0644); !s.ok()) return Err(s);
  return identity;
}

std::string CallTicket(std::string_view peer_secret, std::string_view actor_id, std::string_view client_id) {
  std::string data = "corral actor call";
  data.push_back('\0');
  data.push_back(static_cast<char>(std::min<size_t>(actor_id.size(), 255)));  // where one id ends
  data.append(actor_id);
  data.append(client_id);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), peer_secret.data(), static_cast<int>(peer_secret.size()),
            reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &n))
    return "";
  return std::string(reinterpret_cast<const char*>(mac), n);
}

std::string CallPskIdentity(std::string_view actor_id, std::string_view client_id) {
  return Hex(actor_id) + ":" + Hex(client_id);
}

std::string CallPskKey(std::string_view peer_secret, std::string_view identity) {
  size_t colon = identity.find(':');
  if (peer_secret.empty() || colon == std::string_view::npos) return "";
  auto actor = FromHex(identity.substr(0, colon));
  auto client = FromHex(identity.substr(colon + 1));
  if (!actor || !client || actor->empty() || client->empty()) return "";
  return CallTicket(peer_secret, *actor, *client);
}

}  // namespace corral::net
