#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "corral/agent/agent.h"
#include "corral/agent/resources_detect.h"
#include "corral/base/files.h"
#include "corral/base/ids.h"
#include "corral/base/log.h"
#include "corral/cli/commands.h"
#include "corral/cli/daemon.h"

namespace corral::cli {

static std::string LoadOrCreateNodeId(const std::string& dir) {
  if (auto t = ReadFile(dir + "/node_id")) {
    if (auto raw = FromHex(t->substr(0, t->find('\n'))); raw && raw->size() == 8) return *raw;
  }
  std::string raw = RandomBytes(8);
  Status s = WriteFile(dir + "/node_id", Hex(raw) + "\n", 0644);
  if (!s.ok()) LOG_WARN("{}", s.ToString());
  return raw;
}

Status BuildResources(const NodeFlags& f, agent::AgentOptions* o) {
  int cpus = f.num_cpus >= 0 ? f.num_cpus : agent::DetectCpus();
  o->resources.Set(kCpu, cpus);
  long long mem = agent::DetectMemoryBytes() / 10 * 9;
  if (!f.memory.empty()) {
    auto m = ParseMemory(f.memory);
    if (!m) return m.error();
    mem = *m;
  }
  o->resources.Set(kMemory, static_cast<double>(mem));
  if (!f.object_store_memory.empty()) {
    auto m = ParseMemory(f.object_store_memory);
    if (!m) return MakeStatus(Code::kInvalidArgument, "--object-store-memory: {}", m.error().message());
    o->object_store_memory = static_cast<uint64_t>(*m);
  }
  std::vector<agent::GpuInfo> found;
  if (auto detected = agent::DetectGpus()) {
    found = std::move(*detected);
    LOG_INFO("NVML found {} GPU(s)", found.size());
  } else {
    LOG_INFO("{}", detected.error().message());
  }
  std::vector<int> ids;
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) {
    // The agent was given some devices only (by index or UUID, as CUDA reads it; empty: none).
    std::string s = cvd;
    for (size_t start = 0; start < s.size();) {
      size_t c = s.find(',', start);
      std::string entry = s.substr(start, c == std::string::npos ? std::string::npos : c - start);
      auto by_uuid = std::find_if(found.begin(), found.end(), [&](const agent::GpuInfo& g) { return g.uuid == entry; });
      int index = -1;
      if (by_uuid != found.end()) {
        index = by_uuid->index;
      } else {
        try {
          index = std::stoi(entry);
        } catch (...) {
        }
      }
      if (index < 0) {  // as CUDA reads it: an entry that names no device hides it and all after it
        if (entry != "-1")
          LOG_WARN("CUDA_VISIBLE_DEVICES names '{}', neither an index nor a UUID NVML reported: no GPU from there on",
                   entry);
        break;
      }
      ids.push_back(index);
      start = c == std::string::npos ? s.size() : c + 1;
    }
  } else {
    for (const auto& g : found) ids.push_back(g.index);
  }
  int gpus = f.num_gpus >= 0 ? f.num_gpus : static_cast<int>(ids.size());
  for (int i = static_cast<int>(ids.size()); i < gpus; ++i) ids.push_back(i);
  ids.resize(gpus);
  for (int id : ids) {
    auto g = std::find_if(found.begin(), found.end(), [&](const agent::GpuInfo& x) { return x.index == id; });
    if (g == found.end()) continue;
    LOG_INFO("GPU {}: {}, {}, {}", g->index, g->name, FormatBytes(static_cast<double>(g->memory_bytes)), g->uuid);
    o->gpu_devices.push_back(*g);
  }
  o->gpu_ids = ids;
  o->resources.Set(kGpu, gpus);
  if (!f.resources.empty()) {
    auto r = ParseAmounts(f.resources);
    if (!r) return r.error();
    for (const auto& [k, v] : *r) {
      if (k == kCpu || k == kGpu || k == kMemory)
        return MakeStatus(Code::kInvalidArgument, "use --num-cpus/--num-gpus/--memory for {}, not --resources", k);
      o->resources.Set(k, v);
    }
  }
  if (!f.labels.empty()) {
    auto l = ParseLabels(f.labels);
    if (!l) return l.error();
    o->labels = *l;
  }
  return Status::Ok();
}

void FillAgentOptions(const NodeFlags& flags, const net::Endpoint& head, const std::string& state,
                      agent::AgentOptions* options) {
  options->head = head;
  options->state_dir = state;
  options->node_id = LoadOrCreateNodeId(state);
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  options->hostname = host;
  options->python = FindPython(flags.python);
  options->python_path = flags.python_path;
  options->task_modules = flags.task_modules;
  options->max_workers = flags.max_workers;
  options->interruptible_only = flags.interruptible_only;
  options->drain_on_sleep = flags.drain_on_sleep;
  options->object_store_dir = flags.object_store_dir;
  options->spill_dir = flags.spill_dir;
  options->object_port = static_cast<uint16_t>(flags.object_port);
}

int StartAgent(const AgentFlags& flags, const std::vector<std::string>& argv) {
  std::string state = flags.state_dir.empty() ? CorralHome() + "/agent" : flags.state_dir;
  auto ep = net::ParseEndpoint(ResolveAddress(flags.address), 7370);
  if (!ep) {
    std::fprintf(stderr, "corral: %s\n", ep.error().message().c_str());
    return 2;
  }
  agent::AgentOptions options;
  if (Status s = BuildResources(flags.node, &options); !s.ok()) {
    std::fprintf(stderr, "corral: %s\n", s.message().c_str());
    return 2;
  }
  const char* join_env = std::getenv("CORRAL_JOIN_TOKEN");
  options.token = !flags.join_token.empty() ? flags.join_token : join_env && *join_env ? join_env : FindToken();
  // The CA this node verified the head with when it joined: kept, so a restart needs no flag.
  client::TrustOptions trust_options = CliTrust();
  bool trust_given = !trust_options.ca_cert_file.empty() || !trust_options.ca_fingerprint.empty() ||
                     std::getenv("CORRAL_CA_CERT") || std::getenv("CORRAL_CA_FINGERPRINT");
  if (!trust_given && access((state + "/head-ca.crt").c_str(), R_OK) == 0)
    trust_options.ca_cert_file = state + "/head-ca.crt";
  auto trust = client::TrustHead(*ep, trust_options);
  if (!trust) {
    std::fprintf(stderr, "corral: %s\n", trust.error().message().c_str());
    return 2;
  }
  options.tls = trust->tls;
  options.ca_cert_file = trust->ca_cert_file;
  bool joined = trust->tls && access((state + "/node.pem").c_str(), R_OK) == 0;
  if (options.token.empty() && !joined) {
    if (trust->tls)
      std::fprintf(stderr,
                   "corral: no join token. Pass --join-token (printed by `corral start --head`, or made with "
                   "`corral token create --role join` on the head's machine) or set CORRAL_JOIN_TOKEN.\n");
    else  // a head in clear (loopback): no certificates to join with, a token each start
      std::fprintf(stderr,
                   "corral: no token for the head at %s. Set CORRAL_TOKEN (printed by `corral start --head`; "
                   "also in the `token` file of its state directory), or pass --join-token.\n",
                   ep->ToString().c_str());
    return 2;
  }
  if (!flags.block) {
    auto ready = StartInBackground(argv, state, "agent.log", "agent");
    if (!ready) return 1;
    std::printf("Corral agent running (node %s, %s), joined the head at %s. Logs: %s/agent.log\n",
                ready->c_str(), options.resources.ToString().c_str(), ep->ToString().c_str(), state.c_str());
    return 0;
  }

  SetLogComponent("agent");
  if (Status s = ClaimStateDir(state); !s.ok()) {
    std::fprintf(stderr, "corral: %s\n", s.message().c_str());
    return 1;
  }
  FillAgentOptions(flags.node, *ep, state, &options);
  if (options.tls && options.ca_cert_file != state + "/head-ca.crt") {
    if (auto ca = ReadFile(options.ca_cert_file)) {
      if (Status s = WriteFile(state + "/head-ca.crt", *ca, 0644); s.ok()) options.ca_cert_file = state + "/head-ca.crt";
      else LOG_WARN("cannot keep the head's CA in the state dir: {}", s.ToString());
    }
  }
  options.exit_when_head_lost = flags.exit_with_head;
  std::string node_hex = Hex(options.node_id);
  options.on_registered = [node_hex] { AnnounceReady(node_hex); };
  boost::asio::io_context io(1);
  options.on_left = [&io] { io.stop(); };
  agent::Agent agent(io, options);
  if (Status s = agent.Start(); !s.ok()) {
    std::fprintf(stderr, "corral: the agent cannot start: %s\n", s.message().c_str());
    return 1;
  }
  LOG_INFO("agent for node {} ({}), workers run {}", ShortHex(options.node_id), options.resources.ToString(),
           options.python);
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  // The first signal drains (running tasks get --drain-timeout to finish, then are handed back);
  // a second one stops at once.
  std::function<void(const boost::system::error_code&, int)> on_signal;
  bool draining = false;
  on_signal = [&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (draining || !agent.registered()) {
      LOG_INFO("signal {}: stopping now", sig);
      agent.Stop();
      io.stop();
      return;
    }
    draining = true;
    LOG_INFO("signal {}: draining for up to {:.0f}s, then leaving (signal again to stop at once)", sig,
             flags.drain_timeout_s);
    agent.Drain(std::chrono::milliseconds(static_cast<int64_t>(flags.drain_timeout_s * 1000)), true,
                fmt::format("stopping (signal {})", sig));
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  if (flags.exit_on_stdin_eof) ExitOnStdinEof();
  RunEventLoop(io);
  agent.Stop();
  unlink((state + "/pid").c_str());
  return agent.exit_code();
}

}  // namespace corral::cli
