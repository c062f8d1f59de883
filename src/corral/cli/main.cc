// corral: start and stop heads and agents, and look at a cluster.
#include <CLI/CLI.hpp>
#include <google/protobuf/stubs/logging.h>

#include "corral/base/files.h"
#include "corral/base/log.h"

#include "corral/cli/commands.h"

namespace {

void AddNodeFlags(CLI::App* cmd, corral::cli::NodeFlags* f) {
  cmd->add_option("--num-cpus", f->num_cpus, "CPUs this node offers (default: detected)");
  cmd->add_option("--num-gpus", f->num_gpus,
                  "GPUs this node offers (default: those NVML reports, limited to CUDA_VISIBLE_DEVICES if set; "
                  "CORRAL_NVML_LIBRARY=/path/libnvidia-ml.so.1 names the driver's library)");
  cmd->add_option("--memory", f->memory, "memory this node offers, e.g. 4GiB (default: 90% of RAM)");
  cmd->add_option("--resources", f->resources, "custom resources, e.g. laptop=1,ssd=2");
  cmd->add_option("--labels", f->labels, "node labels for label selectors, e.g. zone=office");
  cmd->add_option("--python", f->python, "Python interpreter for workers (default: python3 beside corral)");
  cmd->add_option("--python-path", f->python_path, "directories (colon-separated) prepended to the workers' PYTHONPATH: where --tasks modules live");
  cmd->add_option("--tasks", f->task_modules,
                 "modules whose @corral.task functions this node runs, e.g. tasks,reports.jobs (workers import them at start)");
  cmd->add_option("--max-workers", f->max_workers, "most worker processes on this node (default: max(16, 4 x CPUs))");
  cmd->add_flag("--interruptible-only", f->interruptible_only,
                "take only tasks marked interruptible=True (or that select this node's labels): for laptops");
  cmd->add_flag("--drain-on-sleep", f->drain_on_sleep,
                "hold a systemd-logind sleep inhibitor and drain this node before the machine suspends");
  cmd->add_option("--object-store-memory", f->object_store_memory,
                  "most bytes of large values (puts, results, arguments) this node's shared-memory store holds, "
                  "e.g. 8GiB (default: 30% of RAM, at most what /dev/shm holds)");
  cmd->add_option("--object-store-dir", f->object_store_dir,
                  "directory on a memory file system for this node's object store: a subdirectory corral-<node> is "
                  "made there (default: /dev/shm/corral-<node>)");
  cmd->add_option("--object-port", f->object_port,
                  "TCP port this node's agent serves its objects to other agents on (TLS keyed by the cluster's "
                  "secret), on the address it reaches the head by: open it between machines (default: any free port)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--spill-dir", f->spill_dir,
                  "directory on disk where values go when the object store is full, least recently used first: a "
                  "subdirectory corral-<node> is made there (default: <state dir>/spill)");
}

}  // namespace

int main(int argc, char** argv) {
  corral::RaiseOpenFilesLimit();  // a head or agent holds descriptors for every worker and connection
  // protobuf reports malformed input from peers on its own; ours is logged where the connection closes.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string& message) {
    LOG_DEBUG("protobuf: {}", message);
  });
  CLI::App app{"Corral: run Python functions and tasks across your machines.\n"
               "Start a head on one machine (`corral start --head`), join others with the printed command,\n"
               "then call corral.init(address=...) from Python."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(CORRAL_VERSION));

  // How this command trusts a head on another machine (see client/head_trust.h).
  auto add_trust = [](CLI::App* cmd) {
    cmd->add_option("--ca-cert", corral::cli::CliTrust().ca_cert_file,
                    "the cluster CA's certificate, to verify a head on another machine (default: $CORRAL_CA_CERT)");
    cmd->add_option("--ca-fingerprint", corral::cli::CliTrust().ca_fingerprint,
                    "the cluster CA's fingerprint (sha256:..., printed by `corral start --head`): fetched and "
                    "kept on first use (default: $CORRAL_CA_FINGERPRINT)");
  };
  corral::cli::HeadFlags head;
  corral::cli::AgentFlags agent;
  bool is_head = false;
  auto* start = app.add_subcommand("start", "Start a head (--head) or a node agent (--address) on this machine");
  start->add_flag("--head", is_head, "start the head (and an agent for this machine, unless --head-only)");
  start->add_option("--address", agent.address, "HOST:PORT of the head to join (starts a node agent)");
  start->add_option("--join-token", agent.join_token,
                    "agent: the join token printed by `corral start --head` or made by `corral token create --role "
                    "join` (default: $CORRAL_JOIN_TOKEN); needed once: the node then has its certificate");
  add_trust(start);
  start->add_option("--host", head.host, "head: address to listen on")->capture_default_str();
  start->add_option("--port", head.port, "head: port to listen on (0 picks a free one)")->capture_default_str();
  std::string state_dir;
  start->add_option("--state-dir", state_dir, "where state, logs and the token live (default: ~/.corral/head or ~/.corral/agent)");
  bool block = false;
  start->add_flag("--block", block, "stay in the foreground (for systemd and containers)");
  start->add_flag("--head-only", head.head_only, "head: do not start an agent on this machine");
  start->add_flag("--insecure", head.insecure, "head: no longer accepted: a non-loopback --host always speaks TLS")
      ->group("");  // hidden: kept only to explain its removal
  start->add_flag("--tls", head.tls, "head: speak TLS on a loopback --host too (a non-loopback one always does)");
  start->add_flag("--exit-with-head", agent.exit_with_head, "agent: exit when the head goes away");
  bool stdin_eof = false;
  start->add_flag("--exit-on-stdin-eof", stdin_eof, "exit when stdin closes (used by embedded clusters)");
  start->add_option("--heartbeat-ms", head.heartbeat_ms, "head: agent heartbeat interval")->capture_default_str();
  start->add_option("--suspect-after-ms", head.suspect_after_ms, "head: silence before a node takes no new work")->capture_default_str();
  start->add_option("--dead-after-ms", head.dead_after_ms, "head: silence before a node's tasks are re-run elsewhere (agents stop them after 3/4 of it)")->capture_default_str();
  start->add_option("--drain-timeout", agent.drain_timeout_s, "agent: on SIGTERM or `corral stop`, seconds running tasks get to finish before they are handed back")->capture_default_str();
  start->add_option("--prefetch", head.prefetch, "head: tasks queued ahead per CPU on a busy node")->capture_default_str();
  start->add_option("--handshake-timeout-ms", head.handshake_timeout_ms, "head: time a new connection has to authenticate")->capture_default_str();
  start->add_option("--result-ttl", head.result_ttl_s, "head: seconds finished durable tasks and their results are kept")->capture_default_str();
  start->add_flag("--strict-task-names", head.strict_task_names,
                  "head: refuse durable tasks whose function no worker registered (default: they wait for a "
                  "worker that registers it, as Celery queues them)");
  start->add_option("--http-port", head.http_port, "head: port of the REST API (0: any free port, -1: none)")->capture_default_str();
  start->add_option("--http-host", head.http_host, "head: address the REST API listens on (plain HTTP: put a TLS proxy in front to serve it beyond this machine)")->capture_default_str();
  start->add_option("--http-allowed-host", head.http_allowed_hosts, "head: a name clients use in URLs for this head (Host header); loopback names are always allowed");
  start->add_option("--object-memory", head.object_memory, "head: most bytes of values (puts, results) it holds, e.g. 4GiB; a put past it raises ObjectStoreFullError (default: 30% of RAM)");
  start->add_option("--node-cert-validity", head.node_cert_validity, "head: how long the certificate a joining node gets is valid (nodes renew theirs when a third is left): 90d, 12h, 30m")->capture_default_str();
  start->add_option("--worker-credential-ttl", head.worker_credential_ttl, "head: how long the credential a node's workers present is valid (a fresh one reaches the node at half of it)")->capture_default_str();
  start->add_option("--max-unfinished-tasks", head.max_unfinished_tasks, "head: stop reading submissions above this many unfinished tasks")->capture_default_str();
  corral::cli::NodeFlags node;
  AddNodeFlags(start, &node);

  std::string address;
  bool json = false;
  auto* status = app.add_subcommand("status", "Show nodes (state, resources used/total, labels, heartbeat), tasks and actors");
  status->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(status);
  status->add_flag("--json", json, "print JSON");

  double timeout = 30;
  auto* stop = app.add_subcommand("stop", "Stop the heads and agents that `corral start` started on this machine");
  stop->add_option("--timeout", timeout, "seconds to wait before killing")->capture_default_str();
  std::string stop_state_dir;
  stop->add_option("--state-dir", stop_state_dir, "stop the head or agent started with this --state-dir (default: those under $CORRAL_HOME)");

  std::string drain_node;
  double drain_timeout = 60;
  bool drain_stay = false;
  auto* drain = app.add_subcommand("drain", "Empty a node: no new work, queued tasks re-run elsewhere, running ones finish; then it leaves");
  drain->add_option("NODE", drain_node, "node id (or its first hex digits, as `corral status` shows) or hostname")->required();
  drain->add_option("--timeout", drain_timeout, "seconds running tasks get to finish before they are handed back")->capture_default_str();
  drain->add_flag("--stay", drain_stay, "stay in the cluster, taking no new work, instead of leaving");
  drain->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(drain);

  std::string tasks_state, tasks_queue;
  int tasks_limit = 100;
  auto* tasks = app.add_subcommand("tasks", "List durable tasks: id, state, function, queue, attempt, error");
  tasks->add_option("--state", tasks_state, "only this state: pending, started, retry, success, failed, revoked");
  tasks->add_option("--queue", tasks_queue, "only this queue");
  tasks->add_option("--limit", tasks_limit, "at most this many")->capture_default_str();
  tasks->add_flag("--json", json, "print JSON");
  tasks->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(tasks);

  std::string logs_task;
  bool logs_follow = false;
  auto* logs = app.add_subcommand("logs", "Show a task's output (what it printed), read from the log files of the node that ran it");
  logs->add_option("TASK_ID", logs_task,
                   "the task's id: ObjectRef.hex() (or its first 6+ hex digits) of a remote task, or a durable task's "
                   "id as `corral tasks` lists it (its latest run)")
      ->required();
  logs->add_flag("-f,--follow", logs_follow, "keep printing new output until the task ends (waits for it to start)");
  logs->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(logs);

  double top_interval = 2;
  int top_iterations = 0;
  auto* top = app.add_subcommand("top", "A live view of the cluster: nodes, busy workers, resources, tasks/s, queues (Ctrl-C quits)");
  top->add_option("--interval", top_interval, "seconds between refreshes")->capture_default_str();
  top->add_option("-n,--iterations", top_iterations, "stop after this many screens (0: until Ctrl-C)")->capture_default_str();
  top->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(top);

  corral::cli::SubmitFlags sub;
  auto* submit = app.add_subcommand("submit", "Submit a durable task by name with JSON arguments; prints its id");
  submit->add_option("FUNCTION", sub.function, "module:qualname (or module.name) of a @corral.task registered by workers")->required();
  submit->add_option("--args", sub.args_json, "positional arguments as a JSON array")->capture_default_str();
  submit->add_option("--kwargs", sub.kwargs_json, "keyword arguments as a JSON object")->capture_default_str();
  submit->add_option("--queue", sub.queue, "queue")->capture_default_str();
  submit->add_option("--idempotency-key", sub.idempotency_key, "submitting the same key again is the same task");
  submit->add_option("--max-retries", sub.max_retries, "re-runs after the function raised")->capture_default_str();
  submit->add_option("--priority", sub.priority, "higher runs first within its queue")->capture_default_str();
  submit->add_option("--countdown", sub.countdown_s, "seconds to wait before it runs");
  submit->add_flag("--wait", sub.wait, "wait for the result and print it (exit 1 if the task failed)");
  submit->add_option("--timeout", sub.timeout_s, "with --wait: give up after this many seconds")->capture_default_str();
  submit->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(submit);

  corral::cli::ScheduleFlags sched;
  auto* schedule = app.add_subcommand("schedule", "Cron and interval schedules of durable tasks: list, add, pause, resume, rm, run-now, history");
  schedule->add_option("ACTION", sched.action, "list | add | pause | resume | rm | run-now | history")->required();
  schedule->add_option("NAME", sched.name, "the schedule's name");
  schedule->add_option("--function", sched.function, "add: the task function, module:qualname (registered by workers)");
  schedule->add_option("--cron", sched.cron, "add: five cron fields, e.g. '0 2 * * *'");
  schedule->add_option("--every", sched.every_s, "add: every N seconds (instead of --cron)");
  schedule->add_option("--tz", sched.tz, "add: time zone of the cron fields, e.g. Asia/Dhaka")->capture_default_str();
  schedule->add_option("--misfire", sched.misfire, "add: slots missed while the head was down: run_once, skip, run_all")->capture_default_str();
  schedule->add_option("--queue", sched.queue, "add: queue of the submitted tasks")->capture_default_str();
  schedule->add_option("--args", sched.args_json, "add: the arguments as a JSON array")->capture_default_str();
  schedule->add_option("--limit", sched.limit, "history: this many latest fires")->capture_default_str();
  schedule->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(schedule);

  corral::cli::QueueFlags qf;
  auto* queue = app.add_subcommand("queue", "Durable task queues: list them with their counts, or set a queue's weight and limits");
  queue->add_option("ACTION", qf.action, "list | set")->required();
  queue->add_option("NAME", qf.name, "set: the queue's name");
  queue->add_option("--weight", qf.weight, "set: share of the cluster when queues compete (default 1)");
  queue->add_option("--concurrency", qf.concurrency, "set: at most this many of its tasks at once, cluster-wide (0: no limit)");
  queue->add_option("--rate", qf.rate, "set: at most this many starts, cluster-wide: '10/s', '100/m', '5/h' (0: no limit)");
  queue->add_option("--labels", qf.labels, "set: run only on nodes with these labels, e.g. gpu=true ('' clears)");
  queue->add_option("--resources", qf.resources, "set: each task asks for these resources, e.g. GPU=1 ('' clears)");
  queue->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(queue);

  corral::cli::TokenFlags tf;
  auto* token = app.add_subcommand("token", "Tokens with roles: create one (its secret is printed once), list them, revoke one");
  token->require_subcommand(1);
  auto* token_create = token->add_subcommand("create", "Create a token; prints its secret once (stdout)");
  token_create->add_option("--role", tf.role, "read (status, results), submit (read + run work), admin (everything), join (adds one machine; with --ttl any number until it expires), agent (joins nodes; on the head's machine, registers one)")
      ->capture_default_str()
      ->check(CLI::IsMember({"read", "submit", "admin", "join", "agent"}));
  token_create->add_option("--name", tf.name, "a name to list and revoke it by (default: the role)");
  token_create->add_option("--ttl", tf.ttl, "expires after this long: 30d, 12h, 10m, 45s (default: never)");
  auto* token_list = token->add_subcommand("list", "List the tokens: name, role, created, expires, last used (never the secret)");
  auto* token_revoke = token->add_subcommand("revoke", "Revoke a token: refused at once, its open connections closed");
  token_revoke->add_option("NAME", tf.name, "the token's name")->required();
  for (auto* cmd : {token_create, token_list, token_revoke}) {
    cmd->add_option("--address", tf.address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
    add_trust(cmd);
  }

  std::string node_name, max_resources;
  auto* node_cmd = app.add_subcommand("node", "Settings an operator keeps for a node");
  node_cmd->require_subcommand(1);
  auto* node_set = node_cmd->add_subcommand("set", "Cap the resources a node may advertise (kept across restarts)");
  node_set->add_option("NODE", node_name, "node id (or its first hex digits) or hostname")->required();
  node_set->add_option("--max-resources", max_resources,
                       "at most these, e.g. CPU=4,GPU=0,laptop=1 ('' removes the caps); a capped resource counts as "
                       "the smaller of what the node says and the cap")
      ->required();
  node_set->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(node_set);
  auto* node_revoke = node_cmd->add_subcommand("revoke", "Cut a node off (a lost laptop): disconnected now, its tasks re-run elsewhere, its id refused from then on");
  node_revoke->add_option("NODE", node_name, "node id (or its first hex digits) or hostname")->required();
  node_revoke->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
  add_trust(node_revoke);

  auto* certs = app.add_subcommand("certs", "The cluster's certificates: show them, or give the head a new one");
  certs->require_subcommand(1);
  auto* certs_status = certs->add_subcommand("status", "Show the CA's fingerprint, the head's certificate and the nodes' validity");
  auto* certs_rotate = certs->add_subcommand("rotate", "Give the head a new certificate now, without a restart (nodes and clients trust the CA: nothing else changes)");
  for (auto* cmd : {certs_status, certs_rotate}) {
    cmd->add_option("--address", address, "head address (default: $CORRAL_ADDRESS, else the head started here)");
    add_trust(cmd);
  }

  CLI11_PARSE(app, argc, argv);
  std::vector<std::string> args(argv + 1, argv + argc);

  if (*start) {
    if (is_head == !agent.address.empty()) {
      std::fprintf(stderr, "corral start: pass exactly one of --head or --address HOST:PORT\n");
      return 2;
    }
    if (is_head) {
      head.state_dir = state_dir;
      head.block = block;
      head.exit_on_stdin_eof = stdin_eof;
      head.node = node;
      return corral::cli::StartHead(head, args);
    }
    agent.state_dir = state_dir;
    agent.block = block;
    agent.exit_on_stdin_eof = stdin_eof;
    agent.node = node;
    return corral::cli::StartAgent(agent, args);
  }
  if (*status) return corral::cli::ShowStatus(address, json);
  if (*stop) return corral::cli::Stop(timeout, stop_state_dir);
  if (*drain) return corral::cli::DrainNode(address, drain_node, drain_timeout, drain_stay);
  if (*tasks) return corral::cli::ListTasks(address, tasks_state, tasks_queue, tasks_limit, json);
  if (*logs) return corral::cli::ShowLogs(address, logs_task, logs_follow);
  if (*top) return corral::cli::Top(address, top_interval, top_iterations);
  if (*schedule) return corral::cli::ScheduleCommand(address, sched);
  if (*submit) return corral::cli::SubmitTask(address, sub);
  if (*queue) return corral::cli::QueueCommand(address, qf);
  if (*node_set) return corral::cli::NodeSet(address, node_name, max_resources);
  if (*node_revoke) return corral::cli::NodeRevoke(address, node_name);
  if (*certs) return corral::cli::CertsCommand(address, *certs_rotate ? "rotate" : "status");
  if (*token) {
    tf.op = *token_create ? "create" : *token_revoke ? "revoke" : "list";
    return corral::cli::TokenCommand(tf);
  }
  return 0;
}
