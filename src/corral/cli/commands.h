// The `corral` subcommands. Each returns the process exit code.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "corral/agent/agent.h"
#include "corral/client/client.h"
#include "corral/client/head_trust.h"

namespace corral::cli {

// Flags shared by `start --head` (for its local agent) and `start --address`.
struct NodeFlags {
  int num_cpus = -1;
  int num_gpus = -1;
  std::string memory;
  std::string resources;
  std::string labels;
  std::string python;
  std::string python_path;
  std::string task_modules;
  int max_workers = 0;
  bool interruptible_only = false;
  bool drain_on_sleep = false;
  std::string object_store_memory;  // e.g. "8GiB"; empty: 30% of RAM (at most what /dev/shm holds)
  std::string object_store_dir;     // empty: /dev/shm/corral-<node>
  std::string spill_dir;            // empty: <state dir>/spill
  int object_port = 0;              // 0: any free port
  // Re-creates these flags as arguments, for a child `corral start`.
  std::vector<std::string> ToArgs() const;
};

struct HeadFlags {
  std::string host = "127.0.0.1";
  int port = 7370;
  std::string state_dir;
  bool block = false;
  bool head_only = false;
  bool exit_on_stdin_eof = false;
  bool insecure = false;                   // gone: refused with a message saying so
  bool tls = false;                        // TLS on a loopback --host too (non-loopback: always)
  int heartbeat_ms = 1000;
  int suspect_after_ms = 5000;
  int dead_after_ms = 30000;
  int prefetch = 1;
  int handshake_timeout_ms = 10000;
  long max_unfinished_tasks = 2'000'000;
  std::string object_memory;               // e.g. "4GiB"; empty: 30% of this machine's memory
  std::string node_cert_validity = "90d";  // how long a node's certificate is valid
  std::string worker_credential_ttl = "24h";  // how long a node's workers' credential is valid
  int http_port = 8370;                    // -1: no HTTP; 0: any free port
  std::string http_host = "127.0.0.1";     // the REST API's own address: loopback unless asked
  int64_t result_ttl_s = 7 * 86400;
  bool strict_task_names = false;
  std::vector<std::string> http_allowed_hosts;
  NodeFlags node;
};

struct AgentFlags {
  std::string address;
  std::string join_token;  // empty: $CORRAL_JOIN_TOKEN, else the token from CORRAL_TOKEN(_FILE)
  std::string state_dir;
  bool block = false;
  bool exit_with_head = false;
  bool exit_on_stdin_eof = false;
  double drain_timeout_s = 10;  // on SIGTERM (`corral stop`): time running tasks get to finish
  NodeFlags node;
};

int StartHead(const HeadFlags& flags, const std::vector<std::string>& argv);
int StartAgent(const AgentFlags& flags, const std::vector<std::string>& argv);
int ShowStatus(const std::string& address, bool json);

struct TokenFlags {
  std::string op;       // create, list, revoke
  std::string name;
  std::string role = "submit";
  std::string ttl;      // "30d"; empty: never expires
  std::string address;
};
int TokenCommand(const TokenFlags& flags);
// `corral node set NODE --max-resources CPU=2,GPU=0`.
int NodeSet(const std::string& address, const std::string& node, const std::string& max_resources);
// `corral node revoke NODE`.
int NodeRevoke(const std::string& address, const std::string& node);
// --ca-cert / --ca-fingerprint of this invocation (empty: the environment's).
client::TrustOptions& CliTrust();
// "30d", "12h", "10m", "45s" or plain seconds; 0 or "" for none. Errors name `flag`.
Result<int64_t> ParseTtl(const std::string& text, const char* flag = "--ttl");
// `corral certs status|rotate`.
int CertsCommand(const std::string& address, const std::string& op);
// Stops what `corral start` started under $CORRAL_HOME, or with `state_dir` (and the head's own agent in it).
int Stop(double timeout_s, const std::string& state_dir = "");
// Drains a node (id prefix or hostname), showing progress until it left (or, with stay, is idle).
int DrainNode(const std::string& address, const std::string& node, double timeout_s, bool stay);
struct ScheduleFlags {
  std::string action;   // list, add, pause, resume, rm, run-now, history
  std::string name;
  std::string function;
  std::string cron;
  int64_t every_s = 0;
  std::string tz = "UTC";
  std::string misfire = "run_once";
  std::string queue = "default";
  std::string args_json = "[]";
  int limit = 20;
};
int ScheduleCommand(const std::string& address, const ScheduleFlags& flags);

struct QueueFlags {
  std::string action;   // list, set
  std::string name;
  std::optional<double> weight;
  std::optional<int> concurrency;
  std::optional<std::string> rate;       // "10/s", "100/m", "2/h", or a number per second
  std::optional<std::string> labels;     // "gpu=true"
  std::optional<std::string> resources;  // "GPU=1"
};
int QueueCommand(const std::string& address, const QueueFlags& flags);

struct SubmitFlags {
  std::string function;
  std::string args_json = "[]";
  std::string kwargs_json = "{}";
  std::string queue = "default";
  std::string idempotency_key;
  int max_retries = 0;
  int priority = 0;
  double countdown_s = 0;
  bool wait = false;
  double timeout_s = 300;
};
// Submits a durable task by name with JSON arguments; prints its id (or, with --wait, its result).
int SubmitTask(const std::string& address, const SubmitFlags& flags);

// `corral logs TASK_ID [--follow]`: the task's output from its node's log files.
int ShowLogs(const std::string& address, const std::string& task, bool follow);
// `corral top`: a live view of nodes, busy workers, tasks/s and queues; `iterations` 0: until Ctrl-C.
int Top(const std::string& address, double interval_s, int iterations);

// Lists durable tasks (optionally by state and queue).
int ListTasks(const std::string& address, const std::string& state, const std::string& queue, int limit, bool json);

// A client for a CLI command, or null after printing why not.
std::unique_ptr<client::Client> ConnectCli(const std::string& address, const std::string& name);
// A wall-clock time (ns since the epoch) as local "YYYY-MM-DD HH:MM:SS" (with the zone's
// abbreviation if `zone`); "-" for 0.
std::string LocalTime(int64_t ns, bool zone);
// What `corral status` shows as a node's state: alive, suspect, offline, draining, dead, left.
std::string DisplayState(const proto::NodeStatus& node);
// "used/total" of a node's resource (memory in bytes units: "1.5GiB/8.0GiB").
std::string Amount(const proto::NodeStatus& node, const std::string& resource);

// Agent options from flags: resources (detected unless given), labels, node id (kept in `state`),
// hostname, the workers' Python. Shared by `start --address` and the head's own agent.
Status BuildResources(const NodeFlags& flags, agent::AgentOptions* options);
void FillAgentOptions(const NodeFlags& flags, const net::Endpoint& head, const std::string& state,
                      agent::AgentOptions* options);

// The head address for CLI commands: --address, else $CORRAL_ADDRESS, else the address file of
// the head started on this machine.
std::string ResolveAddress(const std::string& flag);

}  // namespace corral::cli
