#include "corral/net/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace corral::net {
namespace {

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

void AddExtension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext) {
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
}

}  // namespace

Result<PemPair> GenerateSelfSigned(const std::string& common_name, int days) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (!key) return Err(Code::kInternal, "cannot generate an EC key");
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(days) * 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  std::string san = "DNS:" + common_name + ",IP:127.0.0.1";
  AddExtension(cert, NID_subject_alt_name, san.c_str());
  AddExtension(cert, NID_basic_constraints, "critical,CA:TRUE");
  if (!X509_sign(cert, key, EVP_sha256())) {
    X509_free(cert);
    EVP_PKEY_free(key);
    return Err(Code::kInternal, "cannot sign the certificate");
  }
  BIO* cb = BIO_new(BIO_s_mem());
  BIO* kb = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cb, cert);
  PEM_write_bio_PrivateKey(kb, key, nullptr, nullptr, 0, nullptr, nullptr);
  PemPair out{BioToString(cb), BioToString(kb)};
  BIO_free(cb);
  BIO_free(kb);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

Result<std::shared_ptr<boost::asio::ssl::context>> MakeServerTlsContext(const PemPair& identity) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx->use_certificate_chain(boost::asio::buffer(identity.certificate), ec);
  if (!ec) ctx->use_private_key(boost::asio::buffer(identity.private_key), ssl::context::pem, ec);
  if (ec) return Err(Code::kInvalidArgument, "bad TLS certificate or key: " + ec.message());
  return ctx;
}

Result<std::shared_ptr<boost::asio::ssl::context>> MakeClientTlsContext(const std::string& ca_pem) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  boost::system::error_code ec;
  ctx->add_certificate_authority(boost::asio::buffer(ca_pem), ec);
  if (ec) return Err(Code::kInvalidArgument, "bad TLS CA certificate: " + ec.message());
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

}  // namespace corral::net
