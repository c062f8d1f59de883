#include "corral/client/head_trust.h"

#include <cstdlib>

#include "corral/base/files.h"
#include "corral/net/pki.h"
#include "corral/net/tls.h"

namespace corral::client {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

Result<HeadTrust> WithCaFile(const net::Endpoint& head, const std::string& path, const std::string& pin) {
  auto pem = ReadFile(path);
  if (!pem) return Err(Code::kInvalidArgument, fmt::format("cannot read the CA certificate {}", path));
  if (net::SplitPemCertificates(*pem).size() != 1)
    return Err(Code::kInvalidArgument, fmt::format("{} must hold exactly one certificate: the cluster's CA", path));
  if (!pin.empty()) {
    auto fp = net::Fingerprint(*pem);
    if (!fp || *fp != pin)
      return Err(Code::kPermissionDenied, fmt::format("the CA certificate {} has fingerprint {}, not the pinned {}",
                                                      path, fp ? *fp : "(unreadable)", pin));
  }
  auto ctx = net::MakeClientTlsContext(*pem, head.host);
  if (!ctx) return Err(Code::kInvalidArgument, fmt::format("{}: {}", path, ctx.error().message()));
  return HeadTrust{*ctx, path};
}

// known_cas/<hex>.addresses: the head addresses a CA was pinned for, one per line.
std::string AddressesFile(const std::string& dir, const std::string& pin) {
  return fmt::format("{}/{}.addresses", dir, pin.substr(7));
}

bool PinnedFor(const std::string& dir, const std::string& pin, const net::Endpoint& head) {
  auto text = ReadFile(AddressesFile(dir, pin));
  if (!text) return false;
  std::string want = head.ToString();
  for (size_t start = 0; start < text->size();) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    if (text->compare(start, end - start, want) == 0) return true;
    start = end + 1;
  }
  return false;
}

void RememberAddress(const std::string& dir, const std::string& pin, const net::Endpoint& head) {
  if (PinnedFor(dir, pin, head)) return;
  std::string text = ReadFile(AddressesFile(dir, pin)).value_or("") + head.ToString() + "\n";
  (void)WriteFile(AddressesFile(dir, pin), text, 0644);  // a convenience: without it the pin is asked again
}

}  // namespace

Result<std::string> NormalizeFingerprint(const std::string& text) {
  std::string hex;
  std::string_view t = text;
  if (t.starts_with("sha256:") || t.starts_with("SHA256:")) t.remove_prefix(7);
  for (char c : t) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      hex.clear();
      break;
    }
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 64)
    return Err(Code::kInvalidArgument,
               fmt::format("'{}' is not a CA fingerprint: expected sha256: and 64 hex digits, as `corral start "
                           "--head` prints it",
                           text));
  return "sha256:" + hex;
}

Result<HeadTrust> TrustHead(const net::Endpoint& head, TrustOptions options) {
  std::string file = options.ca_cert_file.empty() ? Env("CORRAL_CA_CERT") : options.ca_cert_file;
  std::string pin_text = options.ca_fingerprint.empty() ? Env("CORRAL_CA_FINGERPRINT") : options.ca_fingerprint;
  std::string pin;
  if (!pin_text.empty()) {
    auto p = NormalizeFingerprint(pin_text);
    if (!p) return Err(p.error());
    pin = *p;
  }
  if (head.is_unix() || (head.is_loopback() && file.empty() && pin.empty())) return HeadTrust{};
  if (!file.empty()) return WithCaFile(head, file, pin);
  if (!pin.empty()) {
    std::string dir = CorralHome() + "/known_cas";
    std::string cached = fmt::format("{}/{}.crt", dir, pin.substr(7));
    if (auto pem = ReadFile(cached); pem && net::Fingerprint(*pem).value_or("") == pin) {
      RememberAddress(dir, pin, head);
      return WithCaFile(head, cached, pin);
    }
    auto chain = net::FetchPresentedChain(head, std::chrono::seconds(10));
    if (!chain)
      return Err(chain.error().code(),
                 fmt::format("cannot fetch the CA of the head at {}: {}", head.ToString(), chain.error().message()));
    std::string presented;
    for (const auto& cert : net::SplitPemCertificates(*chain)) {
      auto fp = net::Fingerprint(cert);
      if (!fp) continue;
      presented = *fp;  // the last one: the root
      if (*fp != pin) continue;
      if (Status s = MakeDirs(dir, 0700); !s.ok()) return Err(s);
      if (Status s = WriteFile(cached, cert, 0644); !s.ok()) return Err(s);
      RememberAddress(dir, pin, head);
      return WithCaFile(head, cached, pin);
    }
    return Err(Code::kPermissionDenied,
               fmt::format("the head at {} presented CA {}, not the pinned {}: check the address and the "
                           "fingerprint (`corral start --head` printed it)",
                           head.ToString(), presented.empty() ? "(none)" : presented, pin));
  }
  // Nothing given: the CA the head presents, if this machine knows it (its own head's, or one
  // pinned before).
  std::string local = DefaultHeadStateDir() + "/ca.crt";
  std::string presented;
  auto chain = net::FetchPresentedChain(head, std::chrono::seconds(10));
  if (!chain) {
    if (ReadFile(local)) return WithCaFile(head, local, "");  // the connection will say what is wrong
    return Err(chain.error().code(),
               fmt::format("cannot reach the head at {}: {}", head.ToString(), chain.error().message()));
  }
  auto certs = net::SplitPemCertificates(*chain);
  if (!certs.empty()) presented = net::Fingerprint(certs.back()).value_or("");
  if (!presented.empty()) {
    if (auto pem = ReadFile(local); pem && net::Fingerprint(*pem).value_or("") == presented)
      return WithCaFile(head, local, presented);
    // A pinned CA, only for an address it was pinned for: another cluster's CA (whose key its
    // operator holds) must not vouch for this address.
    std::string dir = CorralHome() + "/known_cas";
    std::string cached = fmt::format("{}/{}.crt", dir, presented.substr(7));
    if (auto pem = ReadFile(cached); pem && net::Fingerprint(*pem).value_or("") == presented &&
                                     PinnedFor(dir, presented, head))
      return WithCaFile(head, cached, presented);
  }
  return Err(Code::kPermissionDenied,
             fmt::format("the head at {} speaks TLS and this machine does not know its CA{}. If that is your "
                         "head's CA (`corral start --head` printed its fingerprint), pass --ca-fingerprint {} or "
                         "set CORRAL_CA_FINGERPRINT; or give its ca.crt with --ca-cert or CORRAL_CA_CERT",
                         head.ToString(), presented.empty() ? "" : fmt::format(" (it presents {})", presented),
                         presented.empty() ? "sha256:..." : presented));
}

}  // namespace corral::client
