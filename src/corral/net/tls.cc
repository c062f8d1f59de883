#include "corral/net/tls.h"

#include <cstring>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "corral/net/endpoint.h"
#include "corral/net/pki.h"
#include "corral/net/stream.h"

namespace corral::net {

namespace ssl = boost::asio::ssl;

Result<PemPair> GenerateSelfSigned(const std::string& common_name, int days) {
  auto ca = CreateCa(common_name + " CA", days);
  if (!ca) return Err(ca.error());
  return IssueServerCertificate(*ca, {common_name, "127.0.0.1"}, days);  // its chain ends in the CA
}

Result<std::shared_ptr<ssl::context>> MakeServerTlsContext(const PemPair& identity, const std::string& client_ca_pem) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx->use_certificate_chain(boost::asio::buffer(identity.certificate), ec);
  if (!ec) ctx->use_private_key(boost::asio::buffer(identity.private_key), ssl::context::pem, ec);
  if (ec) return Err(Code::kInvalidArgument, "bad TLS certificate or key: " + ec.message());
  if (!client_ca_pem.empty()) {
    ctx->add_certificate_authority(boost::asio::buffer(client_ca_pem), ec);
    if (ec) return Err(Code::kInvalidArgument, "bad TLS CA certificate: " + ec.message());
    ctx->set_verify_mode(ssl::verify_peer);  // optional: without fail_if_no_peer_cert
    // Sessions resumed across restarts of the context need an id context once peers are verified.
    static constexpr unsigned char kSessionContext[] = "corral";
    SSL_CTX_set_session_id_context(ctx->native_handle(), kSessionContext, sizeof kSessionContext - 1);
  }
  return ctx;
}

Status UseIdentity(ssl::context& ctx, const PemPair& identity) {
  boost::system::error_code ec;
  ctx.use_certificate_chain(boost::asio::buffer(identity.certificate), ec);
  if (!ec) ctx.use_private_key(boost::asio::buffer(identity.private_key), ssl::context::pem, ec);
  if (ec) return Status(Code::kInvalidArgument, "bad node certificate or key: " + ec.message());
  return Status::Ok();
}

std::string VerifiedPeerName(void* native_ssl) {
  SSL* handle = static_cast<SSL*>(native_ssl);
  if (!handle || SSL_get_verify_result(handle) != X509_V_OK) return "";
  X509* cert = SSL_get1_peer_certificate(handle);
  if (!cert) return "";
  char cn[256] = {};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return n > 0 ? std::string(cn, static_cast<size_t>(n)) : "";
}

Result<std::shared_ptr<ssl::context>> MakeClientTlsContext(const std::string& ca_pem, const std::string& host) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx->add_certificate_authority(boost::asio::buffer(ca_pem), ec);
  if (ec) return Err(Code::kInvalidArgument, "bad TLS CA certificate: " + ec.message());
  ctx->set_verify_mode(ssl::verify_peer);
  if (!host.empty()) ctx->set_verify_callback(ssl::host_name_verification(host == "localhost" ? "127.0.0.1" : host));
  return ctx;
}

Result<std::string> FetchPresentedChain(const Endpoint& endpoint, std::chrono::milliseconds timeout) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_verify_mode(ssl::verify_none);  // only looking: nothing is sent over this connection
  boost::asio::io_context io;
  Result<std::string> out = Err(Code::kUnavailable, "no answer");
  Dial(io, endpoint, ctx, timeout, [&](Result<std::unique_ptr<ByteStream>> r) {
    if (!r) {
      out = Err(r.error());
      return;
    }
    SSL* handle = static_cast<SSL*>((*r)->native_ssl());
    STACK_OF(X509)* chain = handle ? SSL_get_peer_cert_chain(handle) : nullptr;
    if (!chain) {
      out = Err(Code::kUnavailable, fmt::format("{} presented no certificate", endpoint.ToString()));
      return;
    }
    std::string pem;
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      BIO* bio = BIO_new(BIO_s_mem());
      PEM_write_bio_X509(bio, sk_X509_value(chain, i));
      char* data = nullptr;
      long n = BIO_get_mem_data(bio, &data);
      pem.append(data, static_cast<size_t>(n));
      BIO_free(bio);
    }
    out = pem;
  });
  io.run();
  return out;
}

namespace {

// What a PSK context's callbacks read (SSL_CTX ex data), kept alive by the context's shared_ptr.
struct PskContext {
  explicit PskContext(ssl::context::method method) : ctx(method) {}
  ssl::context ctx;
  std::function<std::string(const std::string&)> key_for;  // server
  std::string identity, key;                                // client
};

// The holder's slot in SSL_CTX ex data (not the app data: asio's context owns that slot, and
// deletes what it holds as its own).
int PskSlot() {
  static const int slot = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return slot;
}

std::shared_ptr<ssl::context> MakePsk(std::shared_ptr<PskContext> holder, bool server) {
  SSL_CTX* native = holder->ctx.native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(native, "TLS_AES_128_GCM_SHA256");
  if (server) SSL_CTX_set_num_tickets(native, 0);
  SSL_CTX_set_ex_data(native, PskSlot(), holder.get());
  if (server) {
    SSL_CTX_set_psk_server_callback(native, [](SSL* ssl, const char* identity, unsigned char* psk,
                                                unsigned max_len) -> unsigned {
      auto* h = static_cast<PskContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), PskSlot()));
      if (h == nullptr || identity == nullptr) return 0;
      std::string key = h->key_for(identity);
      if (key.empty() || key.size() > max_len) return 0;
      std::memcpy(psk, key.data(), key.size());
      return static_cast<unsigned>(key.size());
    });
  } else {
    SSL_CTX_set_psk_client_callback(native, [](SSL* ssl, const char*, char* identity, unsigned max_identity,
                                                unsigned char* psk, unsigned max_len) -> unsigned {
      auto* h = static_cast<PskContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), PskSlot()));
      if (h == nullptr || h->identity.size() + 1 > max_identity || h->key.size() > max_len) return 0;
      std::memcpy(identity, h->identity.c_str(), h->identity.size() + 1);
      std::memcpy(psk, h->key.data(), h->key.size());
      return static_cast<unsigned>(h->key.size());
    });
  }
  return std::shared_ptr<ssl::context>(holder, &holder->ctx);  // (the holder lives as long)
}

}  // namespace

std::shared_ptr<ssl::context> MakePskServerContext(std::function<std::string(const std::string&)> key_for) {
  auto holder = std::make_shared<PskContext>(ssl::context::tls_server);
  holder->key_for = std::move(key_for);
  return MakePsk(std::move(holder), true);
}

std::shared_ptr<ssl::context> MakePskClientContext(std::string identity, std::string key) {
  auto holder = std::make_shared<PskContext>(ssl::context::tls_client);
  // A server that ignores the key and presents a certificate instead (a man in the middle) fails:
  // none verifies against an empty trust store; a handshake on the key presents none.
  holder->ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  holder->identity = std::move(identity);
  holder->key = std::move(key);
  return MakePsk(std::move(holder), false);
}

}  // namespace corral::net
