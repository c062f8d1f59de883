// corral._core: the Python face of the C++ client core. Thin: argument conversion, the GIL released
// around every call that may wait, and Status turned into the exceptions of corral.exceptions.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include "corral/base/files.h"
#include "corral/base/cron.h"
#include "corral/base/ids.h"
#include "corral/base/resources.h"
#include "corral/base/signals.h"
#include "corral/client/client.h"
#include "corral/client/head_trust.h"
#include "corral/client/worker_link.h"
#include "corral/objects/node_store.h"
#include "corral/objects/value_writer.h"
#include "corral/python/proto_dicts.h"
#include "corral/worker.pb.h"

namespace nb = nanobind;
using namespace nb::literals;
using corral::Code;
using corral::Status;
using namespace corral::python;

namespace {

// The task a cancel is meant for: the agent sends SIGINT with sigqueue(), its value the sequence
// number of the task it sent this worker (1 for the first). Recorded here, then Python's SIGINT
// handler runs, which raises only when that task's own code is running; a cancel that arrives
// before the task started is seen at its start, one that arrives after it ended is ignored.
std::atomic<uint32_t> g_interrupt_seq{0};
pthread_t g_main_thread;

// Cancels of an actor's calls (CallCancelSignal): their sequence numbers, written by the handler on
// the main thread, read by Python's SIGINT handler there (take_call_cancels). Real-time signals
// queue, so none is merged with another; past kCancelRing unread ones the oldest are overwritten.
constexpr uint64_t kCancelRing = 1024;
std::atomic<uint32_t> g_call_cancels[kCancelRing];
std::atomic<uint64_t> g_call_cancels_written{0};
uint64_t g_call_cancels_read = 0;  // main thread only

void OnInterrupt(int, siginfo_t* info, void*) {
  if (info->si_code != SI_QUEUE) return;  // only the agent's cancels mean anything to a worker
  if (!pthread_equal(pthread_self(), g_main_thread)) {
    // The kernel picked another thread (a watchdog, the client's IO thread, one of the task's):
    // the main thread, asleep in the task, would not wake. Hand the signal to it, value and all.
    pthread_sigqueue(g_main_thread, SIGINT, info->si_value);
    return;
  }
  g_interrupt_seq.store(static_cast<uint32_t>(info->si_value.sival_int), std::memory_order_relaxed);
  PyErr_SetInterrupt();  // async-signal-safe: runs the Python SIGINT handler in the main thread
}

void OnCallCancel(int signal, siginfo_t* info, void*) {
  if (info->si_code != SI_QUEUE) return;
  if (!pthread_equal(pthread_self(), g_main_thread)) {
    pthread_sigqueue(g_main_thread, signal, info->si_value);  // one writer: the main thread
    return;
  }
  uint64_t n = g_call_cancels_written.load(std::memory_order_relaxed);
  g_call_cancels[n % kCancelRing].store(static_cast<uint32_t>(info->si_value.sival_int), std::memory_order_relaxed);
  g_call_cancels_written.store(n + 1, std::memory_order_release);
  PyErr_SetInterrupt();  // Python's SIGINT handler takes them (worker.py _interrupt)
}

std::vector<uint32_t> TakeCallCancels() {  // on the main thread
  std::vector<uint32_t> out;
  uint64_t end = g_call_cancels_written.load(std::memory_order_acquire);
  if (end - g_call_cancels_read > kCancelRing) g_call_cancels_read = end - kCancelRing;
  for (; g_call_cancels_read < end; ++g_call_cancels_read)
    out.push_back(g_call_cancels[g_call_cancels_read % kCancelRing].load(std::memory_order_relaxed));
  return out;
}

void InstallInterruptHandler() {  // from the main thread (the worker's connect)
  g_main_thread = pthread_self();
  struct sigaction sa {};
  sa.sa_sigaction = OnInterrupt;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(corral::TaskCancelSignal(), &sa, nullptr);
  sa.sa_sigaction = OnCallCancel;
  sigaction(corral::CallCancelSignal(), &sa, nullptr);
}

// Raises the corral.exceptions class that matches the status code.
[[noreturn]] void Raise(const Status& s) {
  const char* cls = "CorralError";
  switch (s.code()) {
    case Code::kDeadlineExceeded: cls = "GetTimeoutError"; break;
    case Code::kUnavailable: cls = "ConnectionLostError"; break;
    case Code::kPermissionDenied: cls = "AuthenticationError"; break;
    case Code::kResourceExhausted: cls = "ValueTooLargeError"; break;
    case Code::kInvalidArgument: cls = "InvalidArgumentError"; break;
    case Code::kNotFound: cls = "NotFoundError"; break;
    default: break;
  }
  nb::object exc = nb::module_::import_("corral.exceptions").attr(cls);
  PyErr_SetString(exc.ptr(), s.message().c_str());
  throw nb::python_error();
}

template <typename T>
T Check(corral::Result<T> r) {
  if (!r) Raise(r.error());
  return std::move(*r);
}


std::vector<std::string> Ids(const nb::list& ids) {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (nb::handle h : ids) out.push_back(Str(nb::cast<nb::bytes>(h)));
  return out;
}

using corral::client::Client;
using corral::client::WorkerLink;

std::unique_ptr<Client> Connect(const std::string& address, const std::string& token, const std::string& name,
                                const std::string& python_version, const std::string& cloudpickle_version,
                                bool print_logs, double timeout_s, bool in_worker, double reconnect_s,
                                const std::string& ca_cert, const std::string& ca_fingerprint) {
  auto ep = corral::net::ParseEndpoint(address, 7370);
  if (!ep) Raise(ep.error());
  corral::Result<corral::client::HeadTrust> trust;
  {
    nb::gil_scoped_release release;  // a first use of a fingerprint fetches the head's CA
    trust = corral::client::TrustHead(*ep, {ca_cert, ca_fingerprint});
  }
  if (!trust) Raise(trust.error());
  corral::client::ClientOptions o;
  o.head = *ep;
  o.tls = trust->tls;
  o.token = token;
  o.name = name;
  o.python_version = python_version;
  o.cloudpickle_version = cloudpickle_version;
  o.print_logs = print_logs;
  o.in_worker = in_worker;
  if (const char* d = std::getenv("CORRAL_DIRECT_ACTOR_CALLS"); d && std::string_view(d) == "0")
    o.direct_actor_calls = false;  // every actor call through the head (comparisons, diagnosis)
  if (const char* d = std::getenv("CORRAL_CALL_SOCKET"); d && std::string_view(d) == "0")
    o.call_socket = false;  // direct calls over loopback TCP even on the actor's machine
  if (const char* d = std::getenv("CORRAL_RESULT_CHANNEL"); d && std::string_view(d) == "0")
    o.result_channel = false;  // results of direct calls relayed by the agent
  if (const char* d = std::getenv("CORRAL_CALL_CHANNEL"); d && std::string_view(d) == "0")
    o.call_channel = false;  // direct calls sent to the agent, not to the actor's worker
  if (const char* d = std::getenv("CORRAL_LATE_RECORD_US"); d && *d)
    o.late_record = std::chrono::microseconds(std::max(0L, std::strtol(d, nullptr, 10)));
  if (const char* d = std::getenv("CORRAL_DIRECT_SPIN_US"); d && *d)
    o.direct_spin = std::chrono::microseconds(std::max(0L, std::strtol(d, nullptr, 10)));
  if (const char* f = std::getenv("CORRAL_TOKEN_FILE"); in_worker && f && *f) o.token_file = f;  // renewed by the agent
  o.reconnect = reconnect_s > 0;
  o.reconnect_for = std::chrono::milliseconds(static_cast<int64_t>(reconnect_s * 1000));
  o.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  corral::Result<std::unique_ptr<Client>> r;
  {
    nb::gil_scoped_release release;
    r = Client::Connect(o);
  }
  return Check(std::move(r));
}

// A request to the head, waited for with the GIL released.
corral::proto::Reply AskHead(Client& c, const corral::proto::Request& req, double timeout_s = 10) {
  corral::Result<corral::proto::Reply> r;
  {
    nb::gil_scoped_release release;
    r = c.Request(req, timeout_s);
  }
  return Check(std::move(r));
}

// A value as Python reads it: (data, error kind, message, stored size, locations, stored attempt, id);
// a stored value (size > 0) is read from a node's store (python/corral/_store.py), not `data`.
nb::tuple ValueTuple(const corral::proto::ObjectValue& v) {
  nb::list locations;
  for (const auto& n : v.locations()) locations.append(Bytes(n));
  return nb::make_tuple(Bytes(v.data()), static_cast<int>(v.error()), v.message(), v.stored_size(), locations,
                        v.stored_attempt(), Bytes(v.id()));
}

nb::list Get(Client& c, const nb::list& ids, double timeout) {
  std::vector<std::string> keys = Ids(ids);
  corral::Result<std::vector<corral::client::ObjectPtr>> r;
  {
    nb::gil_scoped_release release;
    r = c.Get(keys, timeout);
  }
  auto values = Check(std::move(r));
  nb::list out;
  for (const auto& v : values) out.append(ValueTuple(*v));
  return out;
}

// None for a task; (actor id, method, concurrency group, creation options or None) for an actor's
// creation or call. Options: (max_concurrency, {group: limit}, is_async).
nb::object ActorTuple(const corral::proto::TaskSpec& spec) {
  if (spec.actor_id().empty()) return nb::none();
  nb::object options = nb::none();
  if (spec.has_actor()) {
    nb::dict groups;
    for (const auto& [g, n] : spec.actor().concurrency_groups()) groups[g.c_str()] = n;
    options = nb::make_tuple(spec.actor().max_concurrency(), groups, spec.actor().is_async());
  }
  return nb::make_tuple(Bytes(spec.actor_id()), spec.method(), spec.concurrency_group(), options);
}

nb::tuple NextTask(WorkerLink& link) {
  corral::Result<corral::proto::ExecuteTask> r;
  uint32_t seq = 0;
  {
    nb::gil_scoped_release release;
    r = link.NextTask(&seq);
  }
  auto t = Check(std::move(r));
  const auto& spec = t.spec();
  nb::list deps;
  for (const auto& d : t.deps()) deps.append(ValueTuple(d));
  nb::list gpus;
  for (int g : t.gpu_ids()) gpus.append(g);
  nb::dict resources;
  for (const auto& [k, v] : spec.resources()) resources[k.c_str()] = v;
  nb::list parents;  // durable canvas: (format, encoded result) of each parent
  for (int i = 0; i < spec.parent_results_size(); ++i)
    parents.append(nb::make_tuple(i < spec.parent_formats_size() ? spec.parent_formats(i) : std::string(),
                                  Bytes(spec.parent_results(i))));
  nb::list forget;  // function hashes the worker drops from its cache before this task
  for (const auto& h : t.forget_functions()) forget.append(Bytes(h));
  return nb::make_tuple(Bytes(spec.task_id()), spec.attempt(), spec.name(), Bytes(spec.function_hash()),
                        Bytes(spec.function()), Bytes(spec.args()), deps, resources, gpus, Bytes(spec.owner_id()),
                        spec.durable_function(), spec.args_format(), spec.soft_time_limit_s(), parents, spec.link(),
                        forget, ActorTuple(spec), seq);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "Corral's C++ client core. Use the corral package, not this module.";
  m.def("find_token", &corral::FindToken, "CORRAL_TOKEN, else CORRAL_TOKEN_FILE, else the local head's token");
  m.def(
      "cron_next",
      [](const std::string& expr, const std::string& tz, int64_t after_ns) {
        auto e = corral::CronExpr::Parse(expr);
        if (!e) Raise(e.error());
        return Check(e->Next(after_ns, tz));
      },
      "expr"_a, "tz"_a, "after_ns"_a, "The first slot of a cron expression after after_ns (UTC ns), in zone tz.");
  m.def("hex", [](const nb::bytes& b) { return corral::Hex(Str(b)); });
  m.def("take_pooled", &corral::objects::NodeStore::TakePooled, nb::arg("store_dir"), nb::arg("size"), nb::arg("to"),
        "Renames a freed file of the store's pool to `to` for a value of `size` bytes (see NodeStore::TakePooled)");
  m.def(
      "write_value",
      [](int fd, const nb::list& parts, bool over_existing) {
        // The buffers stay acquired (their memory cannot move or go) while the GIL is released.
        std::vector<Py_buffer> held;
        held.reserve(parts.size());
        struct Release {
          std::vector<Py_buffer>& b;
          ~Release() {
            for (auto& v : b) PyBuffer_Release(&v);
          }
        } release{held};
        std::vector<std::string_view> views;
        for (nb::handle part : parts) {
          Py_buffer view;
          if (PyObject_GetBuffer(part.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw nb::python_error();
          held.push_back(view);
          views.emplace_back(static_cast<const char*>(view.buf), static_cast<size_t>(view.len));
        }
        Status st;
        {
          nb::gil_scoped_release unlocked;
          st = corral::objects::WriteValue(fd, views, over_existing);
        }
        if (!st.ok()) throw std::runtime_error(st.message());
      },
      "fd"_a, "parts"_a, "over_existing"_a,
      "Writes the buffers one after another into a store file (see objects/value_writer.h); OSError-like "
      "RuntimeError if it fails");
  m.def("parse_rate", [](const std::string& text) { return Check(corral::ParseRate(text)); },
        "'10/s', '100/m', '5/h' or a number -> per second (the CLI's and the head's parser)");

  nb::class_<Client>(m, "Client")
      .def_static("connect", &Connect, "address"_a, "token"_a, "name"_a, "python_version"_a,
                  "cloudpickle_version"_a, "print_logs"_a = true, "timeout"_a = 10.0, "in_worker"_a = false,
                  "reconnect_s"_a = 0.0, "ca_cert"_a = "", "ca_fingerprint"_a = "")
      .def_prop_ro("client_id", [](Client& c) { return Bytes(c.client_id()); })
      .def_prop_ro("connected", &Client::connected)
      .def_prop_ro("reconnects", &Client::reconnects)
      .def_prop_ro("reconnecting", &Client::reconnecting)
      .def("register_function",
           [](Client& c, const std::string& name, const nb::bytes& hash, const nb::bytes& pickled,
              const std::map<std::string, double>& resources, const std::map<std::string, std::string>& labels,
              uint32_t max_retries, bool interruptible, bool keep_running, const std::optional<nb::dict>& actor,
              const nb::bytes& gang_id, int gang_member) {
             std::optional<corral::proto::ActorSpec> spec;
             if (actor) spec = ActorSpecOf(*actor);
             return c.RegisterFunction(name, Str(hash), Str(pickled), resources, labels, max_retries, interruptible,
                                       keep_running, spec ? &*spec : nullptr, Str(gang_id), gang_member);
           },
           "name"_a, "hash"_a, "pickled"_a, "resources"_a, "labels"_a, "max_retries"_a, "interruptible"_a = false,
           "keep_running_on_partition"_a = false, "actor"_a = nb::none(), "gang_id"_a = nb::bytes(""),
           "gang_member"_a = -1)
      .def("submit_call",
           [](Client& c, const nb::bytes& actor_id, const std::string& name, const std::string& method,
              const nb::bytes& args, const nb::list& deps, uint32_t max_retries, const std::string& group,
              bool direct) {
             std::string a = Str(args), actor = Str(actor_id);
             std::vector<std::string> d = Ids(deps);
             corral::Result<std::string> r;
             {
               nb::gil_scoped_release release;
               r = c.SubmitCall(actor, name, method, std::move(a), d, max_retries, group, direct);
             }
             return Bytes(Check(std::move(r)));
           },
           "actor_id"_a, "name"_a, "method"_a, "args"_a, "deps"_a, "max_retries"_a, "group"_a, "direct"_a = true)
      .def("actor_request",
           [](Client& c, const std::string& op, const std::string& name, const std::string& ns,
              const nb::bytes& actor_id, bool restart, bool include_dead) {
             corral::proto::Request req;
             auto* a = req.mutable_actor();
             a->set_op(op == "get" ? corral::proto::ActorRequest::GET
                       : op == "kill" ? corral::proto::ActorRequest::KILL
                                      : corral::proto::ActorRequest::LIST);
             a->set_name(name);
             a->set_namespace_(ns);
             a->set_actor_id(Str(actor_id));
             a->set_restart(restart);
             a->set_include_dead(include_dead);
             auto reply = AskHead(c, req);
             nb::list out;
             for (const auto& info : reply.actors()) out.append(ActorDict(info));
             return out;
           },
           "op"_a, "name"_a = "", "namespace"_a = "", "actor_id"_a = nb::bytes(""), "restart"_a = false,
           "include_dead"_a = false)
      .def("gang_request",
           [](Client& c, const std::string& op, const nb::bytes& gang_id, const nb::list& bundles,
              const std::string& strategy, const std::string& name, bool detached) {
             corral::proto::Request req;
             auto* g = req.mutable_gang();
             if (op == "create") g->set_op(corral::proto::GangRequest::CREATE);
             else if (op == "remove") g->set_op(corral::proto::GangRequest::REMOVE);
             else if (op == "get") g->set_op(corral::proto::GangRequest::GET);
             else if (op == "list") g->set_op(corral::proto::GangRequest::LIST);
             else throw nb::value_error("gang_request: op is create, remove, get or list");
             g->set_gang_id(Str(gang_id));
             for (auto b : bundles) {
               auto* out = g->add_bundles()->mutable_resources();
               for (auto [k, v] : nb::cast<nb::dict>(b)) (*out)[nb::cast<std::string>(k)] = nb::cast<double>(v);
             }
             g->set_strategy(strategy);
             g->set_name(name);
             g->set_detached(detached);
             // Remembered before it is sent (a new head run in between gets it too), forgotten on refusal.
             if (op == "create") c.RememberGang(*g);  // sent again to a restarted head
             if (op == "remove") c.ForgetGang(g->gang_id());
             corral::proto::Reply reply;
             try {
               reply = AskHead(c, req);
             } catch (...) {
               if (op == "create") c.ForgetGang(g->gang_id());
               throw;
             }
             nb::list out;
             for (const auto& info : reply.gangs()) out.append(GangDict(info));
             return out;
           },
           "op"_a, "gang_id"_a = nb::bytes(""), "bundles"_a = nb::list(), "strategy"_a = "", "name"_a = "",
           "detached"_a = false, "Gangs: create, get, list or remove; answers the gangs' state as dicts.")
      .def("submit",
           [](Client& c, int fn, const nb::bytes& args, const nb::list& deps) {
             std::string a = Str(args);
             std::vector<std::string> d = Ids(deps);
             corral::Result<std::string> r;
             {
               nb::gil_scoped_release release;
               r = c.Submit(fn, std::move(a), d);
             }
             return Bytes(Check(std::move(r)));
           })
      .def("put",
           [](Client& c, const nb::bytes& data) {
             std::string d = Str(data);
             corral::Result<std::string> r;
             {
               nb::gil_scoped_release release;
               r = c.Put(std::move(d));
             }
             return Bytes(Check(std::move(r)));
           })
      .def("new_object_id", [](Client& c) { return Bytes(c.NewObjectId()); })
      .def("put_stored",
           [](Client& c, const nb::bytes& id, uint64_t size, const nb::bytes& node) {
             corral::Result<std::string> r;
             std::string key = Str(id), where = Str(node);
             {
               nb::gil_scoped_release release;
               r = c.PutStored(key, size, where);
             }
             if (!r && r.error().code() == corral::Code::kResourceExhausted) {
               PyErr_SetString(nb::module_::import_("corral.exceptions").attr("ObjectStoreFullError").ptr(),
                               r.error().message().c_str());
               throw nb::python_error();
             }
             return Bytes(Check(std::move(r)));
           },
           "id"_a, "size"_a, "node"_a, "Registers a value written to node's store under id (see _store.py).")
      .def("add_copy",
           [](Client& c, const nb::bytes& id, uint32_t attempt, const nb::bytes& node) {
             corral::proto::Request req;
             req.mutable_add_copy()->set_id(Str(id));
             req.mutable_add_copy()->set_stored_attempt(attempt);
             req.mutable_add_copy()->add_locations(Str(node));
             AskHead(c, req);
           },
           "id"_a, "attempt"_a, "node"_a, "Tells the head this node's store now holds a copy of a stored value.")
      .def("pull_to_node",
           [](Client& c, const nb::bytes& id, const nb::bytes& node, double timeout) {
             corral::proto::Request req;
             req.mutable_pull_to_node()->set_id(Str(id));
             req.mutable_pull_to_node()->set_node(Str(node));
             corral::Result<corral::proto::Reply> r;
             {
               nb::gil_scoped_release release;
               r = c.Request(req, timeout);
             }
             if (r) return nb::make_tuple("ok", "");
             const char* kind = "other";
             switch (r.error().code()) {
               case Code::kUnavailable:
               case Code::kDeadlineExceeded:
               case Code::kNotFound: kind = "lost"; break;       // from here: wait for another copy or a rebuild
               case Code::kResourceExhausted: kind = "no_room"; break;
               default: break;
             }
             return nb::make_tuple(kind, r.error().message());
           },
           "id"_a, "node"_a, "timeout"_a,
           "Has node's agent copy a stored value from a node that holds it (agent to agent): "
           "('ok', '') once it is in node's store, else (kind, why) with kind 'lost', 'no_room' or 'other'.")
      .def("fetch",
           [](Client& c, const nb::bytes& id, uint64_t offset, uint64_t length, double timeout) {
             corral::proto::Request req;
             req.mutable_fetch_object()->set_id(Str(id));
             req.mutable_fetch_object()->set_offset(offset);
             req.mutable_fetch_object()->set_length(length);
             corral::proto::Reply r = AskHead(c, req, timeout);
             return nb::make_tuple(Bytes(r.chunk()), r.object_size(), r.chunk_crc32());
           },
           "id"_a, "offset"_a, "length"_a, "timeout"_a = 60.0,
           "Bytes of a stored object from a node that holds it, relayed by the head: (chunk, object size).")
      .def("get", &Get, "ids"_a, "timeout"_a)
      .def("wait",
           [](Client& c, const nb::list& ids, size_t n, double timeout) {
             std::vector<std::string> keys = Ids(ids);
             corral::Result<std::vector<bool>> r;
             {
               nb::gil_scoped_release release;
               r = c.Wait(keys, n, timeout);
             }
             return Check(std::move(r));
           })
      .def("generator_item",
           [](Client& c, const nb::bytes& task_id, size_t index, double timeout) -> nb::object {
             corral::Result<std::optional<std::string>> r;
             {
               nb::gil_scoped_release release;
               r = c.GeneratorItem(Str(task_id), index, timeout);
             }
             std::optional<std::string> id = Check(std::move(r));
             if (!id) return nb::none();
             return Bytes(*id);
           },
           "task_id"_a, "index"_a, "timeout"_a,
           "The id of generator task `task_id`'s value `index` once stored; None once the task ended "
           "without telling it, or after `timeout` seconds.")
      .def("add_ref", [](Client& c, const nb::bytes& id) { c.AddRef(Str(id)); })
      .def("release", [](Client& c, const nb::bytes& id) { c.Release(Str(id)); })
      .def("pin", [](Client& c, const nb::bytes& id) { c.Pin(Str(id)); })
      .def("unborrow", [](Client& c, const nb::bytes& id) { c.Unborrow(Str(id)); })
      .def("contain_refs",
           [](Client& c, const nb::bytes& container, const nb::list& ids) {
             corral::proto::Request req;
             req.mutable_contain_refs()->set_container(Str(container));
             for (auto& id : Ids(ids)) req.mutable_contain_refs()->add_ids(std::move(id));
             AskHead(c, req);
           },
           "container"_a, "ids"_a, "The objects ids live at least as long as the object container (refs pickled into it).")
      .def("borrow_refs",
           [](Client& c, const nb::list& ids) {
             corral::proto::Request req;
             for (auto& id : Ids(ids)) req.mutable_borrow_refs()->add_ids(std::move(id));
             AskHead(c, req);
           },
           "ids"_a, "Registers refs this process unpickled: their objects live until unborrow() or its exit.")
      .def("cancel",
           [](Client& c, const nb::bytes& id, bool force) {
             Status s = c.Cancel(Str(id), force);
             if (!s.ok()) Raise(s);
           })
      .def("durable_submit",
           [](Client& c, const nb::list& tasks) {
             corral::proto::Request req;
             auto* sub = req.mutable_durable_submit();
             for (nb::handle h : tasks) {
               nb::dict d = nb::cast<nb::dict>(h);
               auto* t = sub->add_tasks();
               t->set_id(nb::cast<std::string>(d["id"]));
               t->set_function(nb::cast<std::string>(d["function"]));
               t->set_args(Str(nb::cast<nb::bytes>(d["args"])));
               t->set_args_format(nb::cast<std::string>(d["args_format"]));
               t->set_queue(nb::cast<std::string>(d["queue"]));
               t->set_priority(nb::cast<int>(d["priority"]));
               t->set_idempotency_key(nb::cast<std::string>(d["idempotency_key"]));
               t->set_eta_ns(nb::cast<int64_t>(d["eta_ns"]));
               t->set_expires_ns(nb::cast<int64_t>(d["expires_ns"]));
               t->set_max_retries(nb::cast<int>(d["max_retries"]));
               t->set_retry_backoff_s(nb::cast<double>(d["retry_backoff_s"]));
               if (d.contains("soft_time_limit_s")) t->set_soft_time_limit_s(nb::cast<double>(d["soft_time_limit_s"]));
               if (d.contains("time_limit_s")) t->set_time_limit_s(nb::cast<double>(d["time_limit_s"]));
               if (d.contains("parents"))
                 for (nb::handle p : nb::cast<nb::list>(d["parents"])) t->add_parents(nb::cast<std::string>(p));
               if (d.contains("link")) t->set_link(nb::cast<std::string>(d["link"]));
             }
             auto reply = AskHead(c, req, 60);
             nb::list out;
             for (int i = 0; i < reply.submitted_ids_size(); ++i)
               out.append(nb::make_tuple(reply.submitted_ids(i), reply.inserted(i)));
             return out;
           },
           "tasks"_a, "Stores durable tasks (fsync) and returns [(id, inserted)] for each.")
      .def("durable_get",
           [](Client& c, const std::string& id, double wait_s, bool on_change, uint32_t seen_changes) {
             corral::proto::Request req;
             req.mutable_durable_get()->set_id(id);
             req.mutable_durable_get()->set_wait_s(wait_s);
             req.mutable_durable_get()->set_on_change(on_change);
             req.mutable_durable_get()->set_seen_changes(seen_changes);
             return DurableDict(AskHead(c, req, wait_s + 30).durable());
           },
           "id"_a, "wait_s"_a = 0.0, "on_change"_a = false, "seen_changes"_a = 0)
      .def("durable_cancel",
           [](Client& c, const std::string& id) {
             corral::proto::Request req;
             req.mutable_durable_cancel()->set_id(id);
             return DurableDict(AskHead(c, req, 60).durable());
           },
           "id"_a)
      .def("durable_forget",
           [](Client& c, const std::string& id) {
             corral::proto::Request req;
             req.mutable_durable_forget()->set_id(id);
             return DurableDict(AskHead(c, req, 60).durable());
           },
           "id"_a)
      .def("durable_store",
           [](Client& c, const std::string& id, const nb::bytes& value, const std::string& value_format) {
             corral::proto::Request req;
             req.mutable_durable_store()->set_id(id);
             req.mutable_durable_store()->set_value(Str(value));
             req.mutable_durable_store()->set_value_format(value_format);
             return DurableDict(AskHead(c, req, 60).durable());
           },
           "id"_a, "value"_a, "value_format"_a)
      .def("durable_progress",
           [](Client& c, const std::string& run_id, const std::string& state, const nb::bytes& meta,
              const std::string& meta_format) {
             corral::proto::Request req;
             corral::proto::DurableProgress* p = req.mutable_durable_progress();
             p->set_run_id(run_id);
             p->set_state(state);
             p->set_meta(Str(meta));
             p->set_meta_format(meta_format);
             return DurableDict(AskHead(c, req, 60).durable());
           },
           "run_id"_a, "state"_a, "meta"_a, "meta_format"_a)
      .def("durable_list",
           [](Client& c, const std::string& state, const std::string& queue, int limit) {
             corral::proto::Request req;
             req.mutable_durable_list()->set_state(state);
             req.mutable_durable_list()->set_queue(queue);
             req.mutable_durable_list()->set_limit(limit);
             nb::list out;
             corral::proto::Reply reply = AskHead(c, req, 60);
             for (const auto& t : reply.durable_list()) out.append(DurableDict(t));
             return out;
           },
           "state"_a = "", "queue"_a = "", "limit"_a = 100)
      .def("schedule_op",
           [](Client& c, int op, const nb::dict& spec, int limit) {
             corral::proto::Request req;
             auto* r = req.mutable_schedule();
             r->set_op(static_cast<corral::proto::ScheduleRequest::Op>(op));
             r->set_limit(limit);
             auto* sp = r->mutable_spec();
             auto str = [&](const char* k) { return spec.contains(k) ? nb::cast<std::string>(spec[k]) : std::string(); };
             sp->set_name(str("name"));
             sp->set_function(str("function"));
             if (spec.contains("args")) sp->set_args(Str(nb::cast<nb::bytes>(spec["args"])));
             sp->set_args_format(str("args_format"));
             sp->set_cron(str("cron"));
             sp->set_tz(str("tz"));
             sp->set_misfire(str("misfire"));
             sp->set_queue(str("queue"));
             if (spec.contains("every_s")) sp->set_every_s(nb::cast<int64_t>(spec["every_s"]));
             if (spec.contains("max_retries")) sp->set_max_retries(nb::cast<int>(spec["max_retries"]));
             corral::proto::Reply reply = AskHead(c, req, 60);
             nb::list schedules, fires;
             for (const auto& x : reply.schedules()) {
               nb::dict d;
               d["name"] = x.name();
               d["function"] = x.function();
               d["cron"] = x.cron();
               d["every_s"] = x.every_s();
               d["tz"] = x.tz();
               d["misfire"] = x.misfire();
               d["queue"] = x.queue();
               d["paused"] = x.paused();
               d["last_slot_ns"] = x.last_slot_ns();
               d["next_slot_ns"] = x.next_slot_ns();
               schedules.append(d);
             }
             for (const auto& f : reply.fires()) {
               nb::dict d;
               d["slot_ns"] = f.slot_ns();
               d["task_id"] = f.task_id();
               d["fired_ns"] = f.fired_ns();
               d["state"] = f.state();
               fires.append(d);
             }
             nb::dict out;
             out["schedules"] = schedules;
             out["fires"] = fires;
             out["task_id"] = reply.task_id();
             return out;
           },
           "op"_a, "spec"_a, "limit"_a = 20)
      .def("queue_op",
           [](Client& c, bool set, const nb::dict& spec) {
             corral::proto::Request req;
             auto* r = req.mutable_queue();
             r->set_op(set ? corral::proto::QueueRequest::SET : corral::proto::QueueRequest::LIST);
             auto* sp = r->mutable_spec();
             if (spec.contains("name")) sp->set_name(nb::cast<std::string>(spec["name"]));
             if (spec.contains("weight")) sp->set_weight(nb::cast<double>(spec["weight"]));
             if (spec.contains("concurrency")) sp->set_concurrency(nb::cast<int>(spec["concurrency"]));
             if (spec.contains("rate_per_s")) sp->set_rate_per_s(nb::cast<double>(spec["rate_per_s"]));
             if (spec.contains("labels")) sp->set_labels(nb::cast<std::string>(spec["labels"]));
             if (spec.contains("resources")) sp->set_resources(nb::cast<std::string>(spec["resources"]));
             nb::list out;
             corral::proto::Reply reply = AskHead(c, req, 60);
             for (const auto& q : reply.queues()) {
               nb::dict d;
               d["name"] = q.name();
               d["weight"] = q.weight();
               d["concurrency"] = q.concurrency();
               d["rate_per_s"] = q.rate_per_s();
               d["labels"] = q.labels();
               d["resources"] = q.resources();
               d["ready"] = q.ready();
               d["waiting"] = q.waiting();
               d["running"] = q.running();
               d["succeeded"] = q.succeeded();
               d["failed"] = q.failed();
               d["slots"] = q.slots();
               out.append(d);
             }
             return out;
           },
           "set"_a, "spec"_a, "Lists the queues, or changes one queue's settings (the keys given).")
      .def("nodes",
           [](Client& c) {
             corral::proto::Request req;
             req.set_nodes(true);
             auto reply = AskHead(c, req);
             nb::list out;
             for (const auto& n : reply.nodes()) out.append(NodeDict(n));
             return out;
           })
      .def("status", [](Client& c) {
        corral::proto::Request req;
        req.set_status(true);
        auto reply = AskHead(c, req);
        const auto& st = reply.status();
        nb::dict d;
        nb::list nodes;
        for (const auto& n : st.nodes()) nodes.append(NodeDict(n));
        d["nodes"] = nodes;
        nb::dict tasks, counters;
        for (const auto& [k, v] : st.tasks_by_state()) tasks[k.c_str()] = v;
        for (const auto& [k, v] : st.counters().values()) counters[k.c_str()] = v;
        d["tasks"] = tasks;
        d["counters"] = counters;
        nb::list inf;
        for (const auto& s : st.infeasible()) inf.append(s);
        d["infeasible"] = inf;
        d["address"] = st.address();
        nb::list actors;
        for (const auto& a : st.actors()) actors.append(ActorDict(a));
        d["actors"] = actors;
        nb::list gangs;
        for (const auto& g : st.gangs()) gangs.append(GangDict(g));
        d["gangs"] = gangs;
        return d;
      });

  nb::class_<WorkerLink>(m, "WorkerLink")
      .def_static("connect",
                  [](const std::string& socket, const std::string& worker_id, const std::string& token,
                     const std::string& pyver, const std::string& cpver, const std::vector<std::string>& functions,
                     int results_fd) {
                    corral::client::WorkerLinkOptions o{socket, worker_id, token, pyver, cpver, "", functions,
                                                        results_fd, ""};
                    if (const char* lease = std::getenv("CORRAL_LEASE_FILE")) o.lease_file = lease;
                    if (const char* node = std::getenv("CORRAL_NODE_ID")) o.node_id = node;
                    o.spin = std::chrono::microseconds(100);  // (decision 50)
                    if (const char* d = std::getenv("CORRAL_WORKER_SPIN_US"); d && *d)
                      o.spin = std::chrono::microseconds(std::max(0L, std::strtol(d, nullptr, 10)));
                    corral::Result<std::unique_ptr<WorkerLink>> r;
                    {
                      nb::gil_scoped_release release;
                      r = WorkerLink::Connect(o);
                    }
                    InstallInterruptHandler();  // after Python's signal.signal(SIGINT, ...): replaces its C handler
                    return Check(std::move(r));
                  },
                  "socket"_a, "worker_id"_a, "token"_a, "pyver"_a, "cpver"_a, "functions"_a, "results_fd"_a = -1)
      .def("next_task", &NextTask)
      .def("take_call_cancels", [](WorkerLink&) { return TakeCallCancels(); },
           "Sequence numbers of the actor calls the agent cancelled since the last take (main thread only).")
      .def("interrupt_seq", [](WorkerLink&) { return g_interrupt_seq.load(std::memory_order_relaxed); },
           "The sequence number of the task the latest cancel was meant for (0: none yet).")
      .def("finish",
           [](WorkerLink& l, const nb::bytes& task_id, uint32_t attempt, const nb::bytes& data, int error,
              const std::string& message, double retry_in_s, uint64_t stored_size) {
             corral::proto::TaskFinished f;
             f.set_task_id(Str(task_id));
             f.set_attempt(attempt);
             f.mutable_result()->set_data(Str(data));
             f.mutable_result()->set_stored_size(stored_size);  // written to this node's store
             f.mutable_result()->set_error(static_cast<corral::proto::ErrorKind>(error));
             f.mutable_result()->set_message(message);
             if (retry_in_s >= 0) f.mutable_result()->set_retry_in_s(retry_in_s);
             Status s = l.Finish(f);
             if (!s.ok()) Raise(s);
           },
           "task_id"_a, "attempt"_a, "data"_a, "error"_a, "message"_a, "retry_in_s"_a = -1.0, "stored_size"_a = 0)
      .def("actor_ready",
           [](WorkerLink& l, const nb::bytes& actor_id, uint32_t attempt) {
             Status s = l.ActorReady(Str(actor_id), attempt);
             if (!s.ok()) Raise(s);
           })
      .def("generator_item",
           [](WorkerLink& l, const nb::bytes& task_id, uint32_t index, const nb::bytes& object_id) {
             Status s = l.GeneratorItem(Str(task_id), index, Str(object_id));
             if (!s.ok()) Raise(s);
           })
      .def("blocked", [](WorkerLink& l, const nb::bytes& task_id, bool blocked) {
        Status s = l.Blocked(Str(task_id), blocked);
        if (!s.ok()) Raise(s);
      });
}
