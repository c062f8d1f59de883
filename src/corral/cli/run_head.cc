#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "corral/agent/resources_detect.h"
#include "corral/base/files.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/cli/commands.h"
#include "corral/cli/daemon.h"
#include "corral/head/head_server.h"
#include "corral/head/dashboard.h"
#include "corral/head/http_server.h"
#include "corral/head/rest_api.h"
#include "corral/net/memory_stream.h"
#include "corral/net/pki.h"

namespace corral::cli {

std::vector<std::string> NodeFlags::ToArgs() const {
  std::vector<std::string> a;
  if (num_cpus >= 0) a.insert(a.end(), {"--num-cpus", std::to_string(num_cpus)});
  if (num_gpus >= 0) a.insert(a.end(), {"--num-gpus", std::to_string(num_gpus)});
  if (!memory.empty()) a.insert(a.end(), {"--memory", memory});
  if (!resources.empty()) a.insert(a.end(), {"--resources", resources});
  if (!labels.empty()) a.insert(a.end(), {"--labels", labels});
  if (!python.empty()) a.insert(a.end(), {"--python", python});
  if (!python_path.empty()) a.insert(a.end(), {"--python-path", python_path});
  if (!task_modules.empty()) a.insert(a.end(), {"--tasks", task_modules});
  if (max_workers > 0) a.insert(a.end(), {"--max-workers", std::to_string(max_workers)});
  if (interruptible_only) a.push_back("--interruptible-only");
  if (drain_on_sleep) a.push_back("--drain-on-sleep");
  if (!object_store_memory.empty()) a.insert(a.end(), {"--object-store-memory", object_store_memory});
  if (!object_store_dir.empty()) a.insert(a.end(), {"--object-store-dir", object_store_dir});
  if (!spill_dir.empty()) a.insert(a.end(), {"--spill-dir", spill_dir});
  if (object_port > 0) a.insert(a.end(), {"--object-port", std::to_string(object_port)});
  return a;
}

static std::string LoadOrCreateToken(const std::string& dir) {
  std::string path = dir + "/token";
  if (auto t = ReadFile(path); t && !t->empty()) {
    std::string tok = *t;
    while (!tok.empty() && (tok.back() == '\n' || tok.back() == ' ')) tok.pop_back();
    if (!tok.empty()) return tok;  // a blank file is as good as none: a new token replaces it
  }
  std::string tok = Hex(RandomBytes(24));
  Status s = WriteFile(path, tok + "\n", 0600);
  if (!s.ok()) LOG_ERROR("{}", s.ToString());
  return tok;
}

// "Dashboard: ... REST API: ..." once the head wrote where it serves HTTP (http:// or https://).
static std::string HttpLine(const std::string& state) {
  auto a = ReadFile(state + "/http_url");
  if (!a) return "";
  std::string url = a->substr(0, a->find('\n'));
  std::string root = url.substr(0, url.size() - std::string("/api/v1").size());
  bool https = a->starts_with("https");
  return fmt::format("Dashboard: {}/ (log in with a token){}\nREST API: {} (header 'Authorization: Bearer <token>')\n"
                     "Prometheus: {}/metrics (a read token; deploy/prometheus/)\n\n",
                     root, https ? "; its certificate is signed by the cluster CA, ca.crt" : "", url, root);
}

// The names and addresses clients may dial this head by: its --host (every local address when it
// is a wildcard), loopback, this machine's name, and the names given for its HTTP Host check.
static std::vector<std::string> CertificateNames(const HeadFlags& flags) {
  std::vector<std::string> names;
  auto add = [&](const std::string& n) {
    if (!n.empty() && std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  auto is_wildcard = [](const std::string& h) { return h == "0.0.0.0" || h == "::" || h.empty(); };
  bool wildcard = is_wildcard(flags.host) || is_wildcard(flags.http_host);
  if (!is_wildcard(flags.host)) add(flags.host);
  if (!is_wildcard(flags.http_host)) add(flags.http_host);
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) add(host);
  add("localhost");
  add("127.0.0.1");
  add("::1");
  if (wildcard) {
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) == 0) {
      for (ifaddrs* i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
        char buf[INET6_ADDRSTRLEN] = {};
        const void* a = i->ifa_addr->sa_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
        if (inet_ntop(i->ifa_addr->sa_family, a, buf, sizeof buf) && !std::string_view(buf).starts_with("fe80"))
          add(buf);
      }
      freeifaddrs(list);
    }
  }
  for (const auto& h : flags.http_allowed_hosts) add(h);
  return names;
}

// Makes `file` hold a live token of `role` (named `name`, `name`-2, ...), unless it already does.
static void KeepToken(head::HeadServer& server, const std::string& file, const std::string& name, head::Role role) {
  auto kept = ReadFile(file);
  if (kept && server.tokens().Authenticate(kept->substr(0, kept->find('\n')), server.clock().WallNs())) return;
  Result<std::string> secret = Err(Code::kInternal, "no name free");
  for (int n = 1; n < 1000 && !secret; ++n) {
    secret = server.tokens().Create(n == 1 ? name : fmt::format("{}-{}", name, n), role, 0, server.clock().WallNs());
    if (!secret && secret.error().code() != Code::kAlreadyExists) break;
  }
  if (!secret) LOG_WARN("cannot make the {} token: {}", name, secret.error().ToString());
  else if (Status s = WriteFile(file, *secret + "\n", 0600); !s.ok()) LOG_WARN("{}", s.ToString());
}

int StartHead(const HeadFlags& flags, const std::vector<std::string>& argv) {
  std::string state = flags.state_dir.empty() ? DefaultHeadStateDir() : flags.state_dir;
  auto ep = net::ParseEndpoint(fmt::format("{}:{}", flags.host, flags.port));
  if (!ep) {
    std::fprintf(stderr, "corral: %s\n", ep.error().message().c_str());
    return 2;
  }
  if (flags.insecure) {
    std::fprintf(stderr,
                 "corral: --insecure is gone: a head on a non-loopback address always speaks TLS (its CA and "
                 "certificate are made in its state dir), and processes on its own machine may still connect "
                 "over loopback without it. Drop the flag.\n");
    return 2;
  }
  bool tls = flags.tls || !ep->is_loopback();
  int64_t object_bytes = agent::DetectMemoryBytes() / 10 * 3;
  if (!flags.object_memory.empty()) {
    auto bytes = ParseMemory(flags.object_memory);
    if (!bytes) {
      std::fprintf(stderr, "corral: --object-memory: %s\n", bytes.error().message().c_str());
      return 2;
    }
    object_bytes = *bytes;
  }
  auto node_validity = ParseTtl(flags.node_cert_validity, "--node-cert-validity");
  if (!node_validity || *node_validity < 60) {
    std::fprintf(stderr, "corral: %s\n",
                 node_validity ? "--node-cert-validity: at least 60s" : node_validity.error().message().c_str());
    return 2;
  }
  auto worker_ttl = ParseTtl(flags.worker_credential_ttl, "--worker-credential-ttl");
  if (!worker_ttl || *worker_ttl < 60) {
    std::fprintf(stderr, "corral: %s\n",
                 worker_ttl ? "--worker-credential-ttl: at least 60s" : worker_ttl.error().message().c_str());
    return 2;
  }
  if (!flags.block) {
    auto addr = StartInBackground(argv, state, "head.log", "head");
    if (!addr) return 1;
    // Other machines join with a join token over TLS; on loopback only this machine's agents come
    // in, with the agent token.
    std::string token = LoadOrCreateToken(state);
    if (auto kept = ReadFile(state + (tls ? "/join-token" : "/agent-token")); kept && !kept->empty())
      token = kept->substr(0, kept->find('\n'));
    std::string trust;  // how another machine verifies this head
    std::string join = *addr;  // the address another machine dials: a wildcard --host has none
    bool wildcard = flags.host == "0.0.0.0" || flags.host == "::";  // the address file then says loopback
    if (auto ep_local = net::ParseEndpoint(*addr); ep_local && ep_local->is_loopback() && tls && wildcard) {
      for (const auto& n : CertificateNames(flags)) {
        boost::system::error_code ec;
        auto a = boost::asio::ip::make_address(n, ec);
        if (!ec && !a.is_loopback()) {
          join = net::Endpoint{n, ep_local->port, ""}.ToString();
          break;
        }
      }
    }
    if (tls) {
      auto ca = ReadFile(state + "/ca.crt");
      auto fp = ca ? net::Fingerprint(*ca) : Result<std::string>(Err(Code::kNotFound, "no ca.crt"));
      if (fp) trust = " --ca-fingerprint " + *fp;
    }
    std::string add_machine =
        tls ? fmt::format("Add a machine to the cluster (run there; the join token is for one machine, make more with\n"
                          "`corral token create --role join`):\n"
                          "  corral start --address {} --join-token {}{}\n\n",
                          join, token, trust)
            : fmt::format("Add an agent on this machine (the head listens on loopback only; start it with --host\n"
                          "<this machine's address> to let other machines join):\n"
                          "  CORRAL_TOKEN={} corral start --address {}\n\n",
                          token, join);
    // Commands and drivers find a head, and its admin token, in the default state directory; one
    // kept elsewhere is named to them.
    bool elsewhere = state != DefaultHeadStateDir();
    std::string token_env = elsewhere ? fmt::format("CORRAL_TOKEN_FILE={}/token ", state) : "";
    std::string python = elsewhere ? fmt::format("  {}python  # then:\n", token_env) : "";
    std::string status = elsewhere ? fmt::format("{}corral status --address {}", token_env, *addr) : "corral status";
    std::string stop = elsewhere ? "corral stop --state-dir " + state : "corral stop";
    std::printf(
        "Corral head running at %s (state and logs in %s)%s\n\n"
        "%s"
        "Use it from Python on this machine:\n"
        "%s"
        "  corral.init(address=\"%s\")\n\n"
        "%s"
        "See the cluster: %s      Stop it: %s\n",
        addr->c_str(), state.c_str(), tls ? ", TLS" : "", add_machine.c_str(), python.c_str(), addr->c_str(),
        HttpLine(state).c_str(), status.c_str(), stop.c_str());
    return 0;
  }

  SetLogComponent("head");
  if (Status s = ClaimStateDir(state); !s.ok()) {
    std::fprintf(stderr, "corral: %s\n", s.message().c_str());
    return 1;
  }
  head::HeadOptions options;
  options.listen = *ep;
  // The CA is made on the first start; the head's certificate is issued afresh at every start.
  auto ca = head::ClusterCa::Open(state, CertificateNames(flags), *node_validity);
  if (!ca) {
    std::fprintf(stderr, "corral: the head cannot start: %s\n", ca.error().message().c_str());
    return 1;
  }
  options.ca = std::move(*ca);
  if (tls) options.tls = options.ca->server_context();
  options.token = LoadOrCreateToken(state);
  options.tokens_path = state + "/tokens.json";
  options.worker_credential_ttl = std::chrono::seconds(*worker_ttl);
  options.nodes_path = state + "/nodes.json";
  options.liveness.heartbeat_interval = Ms(flags.heartbeat_ms);
  options.liveness.suspect_after = Ms(flags.suspect_after_ms);
  options.liveness.dead_after = Ms(flags.dead_after_ms);
  options.tasks.prefetch_per_cpu = flags.prefetch;
  options.tasks.max_object_bytes = object_bytes;
  options.handshake_timeout = std::chrono::milliseconds(flags.handshake_timeout_ms);
  options.max_unfinished_tasks = static_cast<size_t>(std::max(1L, flags.max_unfinished_tasks));
  options.store_path = state + "/store.db";
  options.result_ttl_s = std::max<int64_t>(0, flags.result_ttl_s);
  options.strict_task_names = flags.strict_task_names;
  boost::asio::io_context io(1);
  head::HeadServer server(io, options);
  if (Status s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "corral: the head cannot start: %s\n", s.message().c_str());
    return 1;
  }
  // Where processes on this machine reach the head: a wildcard --host means loopback to them.
  net::Endpoint local = server.endpoint();
  if (local.host == "0.0.0.0") local.host = "127.0.0.1";
  if (local.host == "::") local.host = "::1";
  std::string address = local.ToString();
  if (Status s = WriteFile(state + "/address", address + "\n", 0644); !s.ok()) LOG_WARN("{}", s.ToString());
  // The token printed by `corral start --head`: with TLS a single-use join token, made again when
  // the one kept was used, revoked or lost; on loopback the agent token of this machine's agents.
  if (tls) KeepToken(server, state + "/join-token", "join", head::Role::kJoin);
  else KeepToken(server, state + "/agent-token", "agents", head::Role::kAgent);
  LOG_INFO("head listening on {} (state dir {}){}", address, state,
           tls ? fmt::format("; TLS, cluster CA {}", options.ca->fingerprint()) : "");
  std::unique_ptr<head::HttpServer> http;
  std::unique_ptr<head::Dashboard> dashboard;
  if (flags.http_port >= 0) {
    head::HttpOptions ho;
    auto http_ep = net::ParseEndpoint(fmt::format("{}:{}", flags.http_host, flags.http_port));
    if (!http_ep) {
      std::fprintf(stderr, "corral: --http-host: %s\n", http_ep.error().message().c_str());
      return 2;
    }
    ho.listen = *http_ep;
    // Beyond this machine, or when asked, HTTPS with the head's certificate (the current one).
    bool https = flags.tls || !http_ep->is_loopback();
    if (https) ho.tls = [ca = options.ca] { return ca->server_context(); };
    ho.authenticate = [&server](std::string_view token) { return server.Authenticate(token); };
    // The names and addresses of this machine are safe Host values (a rebinding page's Host is its
    // own domain); --http-allowed-host adds others.
    for (const auto& n : CertificateNames(flags)) ho.allowed_hosts.insert(n.find(':') != std::string::npos ? "[" + n + "]" : n);
    http = std::make_unique<head::HttpServer>(io, ho);
    head::RegisterRestApi(*http, server);
    dashboard = std::make_unique<head::Dashboard>(io, *http, server);
    if (Status s = http->Start(); !s.ok()) {
      std::fprintf(stderr, "corral: the head cannot start: %s\n", s.message().c_str());
      return 1;
    }
    std::string url = fmt::format("{}://{}/api/v1", https ? "https" : "http", http->endpoint().ToString());
    if (Status s = WriteFile(state + "/http_address", http->endpoint().ToString() + "\n", 0644); !s.ok())
      LOG_WARN("{}", s.ToString());
    if (Status s = WriteFile(state + "/http_url", url + "\n", 0644); !s.ok()) LOG_WARN("{}", s.ToString());
    LOG_INFO("REST API at {}", url);
    dashboard->Start();
    if (Status s = WriteFile(state + "/dashboard_url",
                             fmt::format("{}://{}/\n", https ? "https" : "http", http->endpoint().ToString()), 0644);
        !s.ok())
      LOG_WARN("{}", s.ToString());
  }

  // This machine's agent runs inside the head process, linked by an in-process stream: the head's
  // two hops to and from its own node cost no system call (docs/decisions.md).
  std::unique_ptr<agent::Agent> local_agent;
  if (!flags.head_only) {
    agent::AgentOptions ao;
    std::string agent_state = state + "/agent";
    Status s = BuildResources(flags.node, &ao);
    if (s.ok()) s = MakeDirs(agent_state + "/logs");
    if (!s.ok()) {
      std::fprintf(stderr, "corral: %s\n", s.message().c_str());
      return 2;
    }
    FillAgentOptions(flags.node, local, agent_state, &ao);  // its workers dial `local`
    ao.token = options.token;
    if (tls) ao.ca_cert_file = state + "/ca.crt";
    // Ready once this machine's node can run what it was started with (its --tasks registered).
    ao.on_registered = [address] { AnnounceReady(address); };
    ao.serve_objects_on = ep->host;  // other agents find it at the head's host
    ao.connect = [&io, &server](auto done) {
      auto [agent_end, head_end] = net::MakeMemoryStreamPair(io.get_executor(), "local agent", "head");
      server.Adopt(std::move(head_end));
      done(std::move(agent_end));
    };
    local_agent = std::make_unique<agent::Agent>(io, ao);
    if (Status st = local_agent->Start(); !st.ok()) {
      std::fprintf(stderr, "corral: this machine's agent cannot start: %s\n", st.message().c_str());
      return 1;
    }
  }
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    LOG_INFO("signal {}: stopping", sig);
    if (local_agent) local_agent->Stop();
    if (dashboard) dashboard->Stop();
    if (http) http->Stop();
    server.Stop();
    io.stop();
  });
  if (flags.exit_on_stdin_eof) ExitOnStdinEof();
  if (!local_agent) AnnounceReady(address);
  RunEventLoop(io);
  if (local_agent) local_agent->Stop();
  unlink((state + "/address").c_str());
  unlink((state + "/http_address").c_str());
  unlink((state + "/http_url").c_str());
  unlink((state + "/dashboard_url").c_str());
  unlink((state + "/pid").c_str());
  return 0;
}

}  // namespace corral::cli
