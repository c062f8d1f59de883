// The cluster's certificates and how TLS listeners and clients use them: the head's chain verifies
// against the CA for the names it was issued for, and for nothing else; a foreign CA is refused;
// a plaintext peer on a TLS port is told so (or let in where the listener allows it).
#include "corral/net/pki.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "corral/base/files.h"
#include "corral/net/listener.h"
#include "corral/net/stream.h"

namespace corral::net {
namespace {

using namespace std::chrono_literals;

struct Server {
  asio::io_context io;
  std::unique_ptr<Listener> listener;
  int accepted = 0;

  explicit Server(const PemPair& identity, const std::string& client_ca = "") {
    auto l = Listener::Listen(io, *ParseEndpoint("127.0.0.1:0"), *MakeServerTlsContext(identity, client_ca));
    EXPECT_TRUE(l.has_value());
    listener = std::move(*l);
  }
  void Start() {
    listener->Start([this](std::unique_ptr<ByteStream> s) {
      accepted++;
      peer_names.push_back(VerifiedPeerName(s->native_ssl()));
      held.push_back(std::move(s));
    });
  }
  // Dials with `ca` checking `host`; the handshake's outcome.
  Status Handshake(const std::string& ca, const std::string& host, const PemPair* identity = nullptr) {
    Status out(Code::kInternal, "no answer");
    bool done = false;
    auto ctx = *MakeClientTlsContext(ca, host);
    if (identity) {
      EXPECT_TRUE(UseIdentity(*ctx, *identity).ok());
    }
    int before = accepted;
    Dial(io, listener->endpoint(), ctx, 5s, [&](Result<std::unique_ptr<ByteStream>> r) {
      done = true;
      out = r ? Status::Ok() : r.error();
    });
    while (!done) io.run_one_for(100ms);
    // TLS 1.3: the client may finish before the server has checked its certificate.
    for (int i = 0; i < 50 && out.ok() && accepted == before; ++i) io.run_one_for(100ms);
    if (out.ok() && accepted == before) return Status(Code::kPermissionDenied, "the server did not accept it");
    return out;
  }
  std::vector<std::unique_ptr<ByteStream>> held;
  std::vector<std::string> peer_names;
};

TEST(Pki, ServerChainVerifiesForItsNamesOnly) {
  auto ca = CreateCa("test CA");
  ASSERT_TRUE(ca) << ca.error().ToString();
  auto leaf = IssueServerCertificate(*ca, {"head.example", "127.0.0.1"});
  ASSERT_TRUE(leaf) << leaf.error().ToString();
  EXPECT_EQ(SplitPemCertificates(leaf->certificate).size(), 2u);  // leaf, then the CA
  Server s(*leaf);
  s.Start();
  { Status hs = s.Handshake(ca->certificate, ""); EXPECT_TRUE(hs.ok()) << hs.ToString(); }
  { Status hs = s.Handshake(ca->certificate, "127.0.0.1"); EXPECT_TRUE(hs.ok()) << hs.ToString(); }
  EXPECT_FALSE(s.Handshake(ca->certificate, "10.9.9.9").ok());       // not an address it was issued for
  EXPECT_FALSE(s.Handshake(ca->certificate, "other.example").ok());  // nor a name
  auto foreign = CreateCa("someone else's CA");
  EXPECT_FALSE(s.Handshake(foreign->certificate, "127.0.0.1").ok());
}

TEST(Pki, FingerprintIsTheCertificatesSha256) {
  auto ca = CreateCa("test CA");
  auto a = Fingerprint(ca->certificate);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->size(), 7u + 64u);
  EXPECT_TRUE(a->starts_with("sha256:"));
  EXPECT_EQ(*a, *Fingerprint(ca->certificate));
  EXPECT_NE(*a, *Fingerprint(CreateCa("test CA")->certificate));  // a new key, a new fingerprint
  EXPECT_FALSE(Fingerprint("not a certificate"));
}

TEST(Pki, HeadStateKeepsItsCaAndReissuesItsCertificate) {
  std::string dir = ::testing::TempDir() + "/corral-pki-" + std::to_string(getpid());
  ASSERT_TRUE(MakeDirs(dir).ok());
  auto first = LoadOrCreateHeadPki(dir, {"127.0.0.1"});
  ASSERT_TRUE(first) << first.error().ToString();
  auto second = LoadOrCreateHeadPki(dir, {"127.0.0.1", "10.1.2.3"});
  ASSERT_TRUE(second);
  EXPECT_EQ(first->ca_fingerprint, second->ca_fingerprint);
  EXPECT_NE(first->identity.certificate, second->identity.certificate);
  EXPECT_EQ(first->ca_fingerprint, *Fingerprint(*ReadFile(dir + "/ca.crt")));
  for (const char* secret : {"/ca.key", "/head.key"}) {
    struct stat st {};
    ASSERT_EQ(stat((dir + secret).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << secret;
  }
  ASSERT_EQ(unlink((dir + "/ca.key").c_str()), 0);  // a CA without its key is not replaced silently
  EXPECT_FALSE(LoadOrCreateHeadPki(dir, {"127.0.0.1"}));
}

TEST(Pki, ClientLearnsThePresentedChain) {
  auto ca = CreateCa("test CA");
  auto leaf = IssueServerCertificate(*ca, {"127.0.0.1"});
  Server s(*leaf);
  s.Start();
  std::thread t([&] { s.io.run_for(3s); });
  auto chain = FetchPresentedChain(s.listener->endpoint(), 2s);
  t.join();
  ASSERT_TRUE(chain) << chain.error().ToString();
  auto certs = SplitPemCertificates(*chain);
  ASSERT_EQ(certs.size(), 2u);
  EXPECT_EQ(*Fingerprint(certs.back()), *Fingerprint(ca->certificate));
}

// Sends `bytes` in plaintext to the TLS listener and returns what came back before it closed.
std::string PlaintextExchange(Server& s, const std::string& bytes) {
  asio::ip::tcp::socket raw(s.io);
  raw.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), s.listener->endpoint().port));
  asio::write(raw, asio::buffer(bytes));
  std::string got;
  std::thread t([&] { s.io.run_for(3s); });
  std::array<char, 256> buf;
  ErrorCode ec;
  while (!ec) {
    size_t n = raw.read_some(asio::buffer(buf), ec);
    got.append(buf.data(), n);
  }
  t.join();
  return got;
}

TEST(Pki, PlaintextPeerOnTlsPortIsToldAndClosed) {
  auto ca = CreateCa("test CA");
  Server s(*IssueServerCertificate(*ca, {"127.0.0.1"}));
  s.listener->AllowPlaintext([](const asio::ip::address&) { return false; }, "needs TLS");
  s.Start();
  EXPECT_EQ(PlaintextExchange(s, "CR hello"), "needs TLS");
  EXPECT_EQ(s.accepted, 0);
}

TEST(Pki, PlaintextPeerIsLetInWhereAllowed) {
  auto ca = CreateCa("test CA");
  Server s(*IssueServerCertificate(*ca, {"127.0.0.1"}));
  s.listener->AllowPlaintext([](const asio::ip::address& a) { return a.is_loopback(); }, "needs TLS");
  s.Start();
  asio::ip::tcp::socket raw(s.io);
  raw.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), s.listener->endpoint().port));
  asio::write(raw, asio::buffer(std::string("CR hello")));
  s.io.run_for(500ms);
  EXPECT_EQ(s.accepted, 1);
}

// This machine's first IPv4 address that is not loopback ("" if it has none).
std::string LanAddress() {
  ifaddrs* list = nullptr;
  std::string out;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i && out.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    char buf[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    if (!std::string_view(buf).starts_with("127.")) out = buf;
  }
  freeifaddrs(list);
  return out;
}

// Connections that have not finished their handshake are capped per address: a 33rd silent one is
// closed at once instead of holding a socket until the deadline. Loopback is not counted.
TEST(Pki, SilentHandshakesFromOneAddressAreCapped) {
  std::string lan = LanAddress();
  ASSERT_FALSE(lan.empty()) << "this test needs an IPv4 address other than loopback";
  auto ca = CreateCa("test CA");
  asio::io_context io;
  auto l = Listener::Listen(io, *ParseEndpoint("0.0.0.0:0"), *MakeServerTlsContext(*IssueServerCertificate(*ca, {lan})));
  ASSERT_TRUE(l);
  std::vector<std::unique_ptr<ByteStream>> accepted;
  (*l)->Start([&](std::unique_ptr<ByteStream> st) { accepted.push_back(std::move(st)); });
  uint16_t port = (*l)->endpoint().port;
  auto open = [&](const std::string& host, int n) {
    std::vector<asio::ip::tcp::socket> out;
    for (int i = 0; i < n; ++i) {
      out.emplace_back(io);
      out.back().connect(asio::ip::tcp::endpoint(asio::ip::make_address(host), port));
    }
    return out;
  };
  auto closed = [](std::vector<asio::ip::tcp::socket>& sockets) {
    int n = 0;
    for (auto& sock : sockets) {
      struct timeval tv{0, 20000};  // a closed one answers at once; an open one times out
      setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char byte;
      n += ::recv(sock.native_handle(), &byte, 1, 0) == 0;
    }
    return n;
  };
  auto from_lan = open(lan, 33);
  auto from_loopback = open("127.0.0.1", 40);
  std::thread t([&] { io.run_for(3s); });
  std::this_thread::sleep_for(1s);
  // Exactly one (past the cap) was closed by the listener: end of stream, well before the 10 s
  // deadline; the others still wait for their handshake, and loopback is not capped.
  EXPECT_EQ(closed(from_lan), 1);
  EXPECT_EQ(closed(from_loopback), 0);
  t.join();
}

// A node's certificate: issued from its request for the name the CA chooses, presented to a server
// that verifies clients against the CA; one from another CA does not get in.
TEST(Pki, NodeCertificateFromARequestIsVerifiedByTheServer) {
  auto ca = CreateCa("cluster CA");
  auto request = CreateCertificateRequest("whatever the node asks for");
  ASSERT_TRUE(request) << request.error().ToString();
  auto cert = IssueNodeCertificate(*ca, request->certificate, "corral-node-00aa", 3600);
  ASSERT_TRUE(cert) << cert.error().ToString();
  auto info = InspectCertificate(*cert);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->common_name, "corral-node-00aa");
  EXPECT_NEAR(static_cast<double>(info->not_after_s - info->not_before_s), 3600 + 300, 5);
  PemPair node{*cert, request->private_key};

  Server s(*IssueServerCertificate(*ca, {"127.0.0.1"}), ca->certificate);
  s.Start();
  { Status hs = s.Handshake(ca->certificate, "127.0.0.1", &node); EXPECT_TRUE(hs.ok()) << hs.ToString(); }
  { Status hs = s.Handshake(ca->certificate, "127.0.0.1"); EXPECT_TRUE(hs.ok()) << hs.ToString(); }  // a driver
  ASSERT_EQ(s.peer_names.size(), 2u);
  EXPECT_EQ(s.peer_names[0], "corral-node-00aa");
  EXPECT_EQ(s.peer_names[1], "");

  auto other_ca = CreateCa("another CA");
  auto other_request = CreateCertificateRequest("x");
  PemPair foreign{*IssueNodeCertificate(*other_ca, other_request->certificate, "corral-node-00aa", 3600),
                  other_request->private_key};
  EXPECT_FALSE(s.Handshake(ca->certificate, "127.0.0.1", &foreign).ok());
  EXPECT_EQ(s.peer_names.size(), 2u) << "a certificate from another CA is not let in";
}

TEST(Pki, ARequestWhoseSignatureDoesNotMatchIsRefused) {
  auto ca = CreateCa("cluster CA");
  EXPECT_FALSE(IssueNodeCertificate(*ca, "not a request", "corral-node-01", 3600));
  auto request = CreateCertificateRequest("n");
  std::string pem = request->certificate;
  // Flip a character inside the base64 body: its signature no longer matches.
  size_t body = pem.find('\n') + 40;
  pem[body] = pem[body] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(IssueNodeCertificate(*ca, pem, "corral-node-01", 3600));
}

}  // namespace
}  // namespace corral::net
