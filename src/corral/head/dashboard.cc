#include "corral/head/dashboard.h"

#include <chrono>

#include <boost/asio/post.hpp>

#include "corral/base/ids.h"
#include "corral/base/resources.h"
#include "corral/head/head_server.h"
#include "corral/head/http_server.h"
#include "corral/head/status_json.h"
#include "corral/head/web_assets.h"

namespace corral::head {
namespace {

constexpr size_t kHistoryPoints = 720;  // an hour at one point every 5 s

double Resource(const google::protobuf::Map<std::string, double>& m, const char* name) {
  auto it = m.find(name);
  return it == m.end() ? 0.0 : it->second;
}

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

nlohmann::json EntryJson(const TaskJournal::Entry& e, bool detail) {
  nlohmann::json j;
  j["id"] = TaskIdText(e.id.view());
  j["function"] = *e.function;
  j["queue"] = *e.queue;
  j["state"] = TaskJournal::StateName(e.state);
  j["node"] = e.node.empty() ? "" : ShortHex(e.node.view());
  j["attempts"] = e.attempts;
  j["submitted_ns"] = e.submitted_ns;
  j["started_ns"] = e.started_ns;
  j["ended_ns"] = e.ended_ns;
  std::string last;  // the last line of an error says what happened
  if (!e.error.empty()) {
    std::string_view err = e.error;
    while (!err.empty() && err.back() == '\n') err.remove_suffix(1);
    size_t nl = err.rfind('\n');
    last = std::string(nl == std::string_view::npos ? err : err.substr(nl + 1));
  }
  j["error_summary"] = last.substr(0, 200);
  if (detail) {
    j["error"] = e.error;
    j["node_id"] = Hex(e.node.view());
    j["args"] = fmt::format("{} byte(s) of arguments{}", e.args_bytes,
                            e.arg_refs ? fmt::format(", {} passed by reference", e.arg_refs) : std::string());
  }
  return j;
}

HttpResponse Asset(std::string_view body, const char* type) {
  HttpResponse r = HttpResponse::Text(200, std::string(body), type);
  // The page runs only its own script and styles, talks only to this server, and is never framed.
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                         "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
  return r;
}

}  // namespace

Dashboard::Dashboard(boost::asio::io_context& io, HttpServer& http, HeadServer& head)
    : http_(http), head_(head), timer_(io) {
  Routes();
}

Dashboard::~Dashboard() { Stop(); }

void Dashboard::Start() { Tick(); }

void Dashboard::Stop() {
  *alive_ = false;
  timer_.cancel();
}

void Dashboard::Routes() {
  http_.Route("GET", "/", std::nullopt, [](const HttpRequest&, HttpRespond respond) {
    respond(Asset(web::kIndexHtml, "text/html; charset=utf-8"));
  });
  http_.Route("GET", "/app.js", std::nullopt, [](const HttpRequest&, HttpRespond respond) {
    respond(Asset(web::kAppJs, "text/javascript; charset=utf-8"));
  });
  for (const char* icon : {"/favicon.svg", "/favicon.ico"})
    http_.Route("GET", icon, std::nullopt, [](const HttpRequest&, HttpRespond respond) {
      respond(Asset(web::kFaviconSvg, "image/svg+xml"));
    });
  http_.Route("GET", "/app.css", std::nullopt, [](const HttpRequest&, HttpRespond respond) {
    respond(Asset(web::kAppCss, "text/css; charset=utf-8"));
  });
  http_.Route("GET", "/api/v1/events", Role::kRead, [this](const HttpRequest&, HttpRespond respond) {
    HttpResponse r;
    r.event_stream = true;
    respond(std::move(r));
    // A new tab sees the cluster at once, not at the next tick (the others get one more snapshot).
    boost::asio::post(timer_.get_executor(), [this, alive = alive_] {
      if (!*alive || http_.event_streams() <= streams_seen_) return;  // refused (503), or served already
      streams_seen_ = http_.event_streams();
      http_.Publish("snapshot", JsonText(Snapshot()));
    });
  });
  http_.Route("GET", "/api/v1/history", Role::kRead, [this](const HttpRequest&, HttpRespond respond) {
    nlohmann::json j = nlohmann::json::array();
    for (const Point& p : history_) j.push_back(PointJson(p));
    respond(HttpResponse::Json(200, JsonText(j)));
  });
  http_.Route("GET", "/api/v1/runs", Role::kRead, [this](const HttpRequest& req, HttpRespond respond) {
    if (req.role == Role::kWorker) return respond(HttpResponse::Error(403, "a task's code may not read other tasks"));
    auto q = [&](const char* k) { return req.query.contains(k) ? req.query.at(k) : std::string(); };
    std::string state = q("state"), function = q("function"), queue = q("queue"), node = q("node");
    size_t limit = 200;
    if (!q("limit").empty()) {
      try {
        limit = std::clamp<size_t>(std::stoul(q("limit")), 1, 5000);
      } catch (const std::exception&) {
        return respond(HttpResponse::Error(400, "limit must be a whole number"));
      }
    }
    // Open Tasks pages ask again whenever a task changed, all with the same filters, mostly:
    // one answer per journal version and query serves them all.
    std::string key = fmt::format("{}\n{}\n{}\n{}\n{}", state, function, queue, node, limit);
    uint64_t version = head_.tasks().journal().version();
    if (auto it = runs_cache_.find(key); it != runs_cache_.end() && it->second.first == version)
      return respond(HttpResponse::Json(200, it->second.second));
    nlohmann::json rows = nlohmann::json::array();
    size_t matched = 0;
    head_.tasks().journal().ForEachNewestFirst([&](const TaskJournal::Entry& e) {
      if (!state.empty() && state != TaskJournal::StateName(e.state)) return true;
      if (!function.empty() && e.function->find(function) == std::string::npos) return true;
      if (!queue.empty() && *e.queue != queue) return true;
      if (!node.empty() && !Hex(e.node.view()).starts_with(node)) return true;
      matched++;
      if (rows.size() < limit) rows.push_back(EntryJson(e, false));
      return true;
    });
    nlohmann::json j;
    j["tasks"] = std::move(rows);
    j["matched"] = matched;
    j["kept"] = head_.tasks().journal().size();
    j["version"] = version;
    std::string text = JsonText(j);
    if (runs_cache_.size() > 64) runs_cache_.clear();
    runs_cache_[key] = {version, text};
    respond(HttpResponse::Json(200, std::move(text)));
  });
  http_.Route("GET", "/api/v1/runs/{id}", Role::kRead, [this](const HttpRequest& req, HttpRespond respond) {
    if (req.role == Role::kWorker) return respond(HttpResponse::Error(403, "a task's code may not read other tasks"));
    auto e = head_.tasks().journal().Resolve(req.params.at("id"));
    if (!e) return respond(HttpResponse::Error(e.error().code() == Code::kNotFound ? 404 : 400, e.error().message()));
    respond(HttpResponse::Json(200, JsonText(EntryJson(**e, true))));
  });
  http_.Route("GET", "/api/v1/runs/{id}/log", Role::kRead, [this](const HttpRequest& req, HttpRespond respond) {
    if (req.role == Role::kWorker) return respond(HttpResponse::Error(403, "a task's code may not read other tasks"));
    uint64_t offset = 0;
    try {
      if (req.query.contains("offset")) offset = std::stoull(req.query.at("offset"));
    } catch (const std::exception&) {
      return respond(HttpResponse::Error(400, "offset must be a whole number"));
    }
    head_.ReadTaskLog(req.params.at("id"), offset, [respond](Result<proto::TaskLog> log) {
      if (!log) {
        int status = log.error().code() == Code::kNotFound ? 404 : log.error().code() == Code::kUnavailable ? 503 : 400;
        return respond(HttpResponse::Error(status, log.error().message()));
      }
      nlohmann::json j;
      j["text"] = log->text();
      j["next_offset"] = log->next_offset();
      j["ended"] = log->ended();
      j["state"] = log->task_state();
      j["node"] = log->node_id().empty() ? "" : ShortHex(log->node_id());
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
  http_.Route("GET", "/api/v1/schedules/{name}/history", Role::kRead, [this](const HttpRequest& req, HttpRespond respond) {
    proto::ScheduleRequest r;
    r.set_op(proto::ScheduleRequest::HISTORY);
    r.mutable_spec()->set_name(req.params.at("name"));
    r.set_limit(50);
    head_.durable().Schedule(r, [respond](proto::Reply reply) {
      if (!reply.error().empty()) return respond(HttpResponse::Error(404, reply.error()));
      nlohmann::json j = nlohmann::json::array();
      for (const auto& f : reply.fires())
        j.push_back({{"slot_ns", f.slot_ns()}, {"fired_ns", f.fired_ns()}, {"task_id", TaskIdText(f.task_id())},
                     {"state", f.state()}});
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
}

nlohmann::json Dashboard::PointJson(const Point& p) {
  return {{"t", p.t},
          {"tasks_per_s", p.tasks_per_s},
          {"failed_per_s", p.failed_per_s},
          {"cpu_used", p.cpu_used},
          {"cpu_total", p.cpu_total},
          {"gpu_used", p.gpu_used},
          {"gpu_total", p.gpu_total},
          {"memory_used", p.memory_used},
          {"memory_total", p.memory_total},
          {"queued", p.queued}};
}

nlohmann::json Dashboard::Snapshot() {
  proto::ClusterStatus st = head_.BuildStatus(/*count_tasks=*/false);  // counted below without walking the table
  Point p;
  p.t = head_.clock().WallNs() / 1'000'000'000;
  for (const auto& n : st.nodes()) {
    if (n.state() == "dead" || n.state() == "left") continue;
    auto total = [&](const char* r) { return Resource(n.info().resources(), r); };
    auto used = [&](const char* r) { return total(r) - Resource(n.available(), r); };
    p.cpu_used += used(kCpu);
    p.cpu_total += total(kCpu);
    p.gpu_used += used(kGpu);
    p.gpu_total += total(kGpu);
    p.memory_used += used(kMemory);
    p.memory_total += total(kMemory);
  }
  int64_t done = CounterOf(st.counters(), "tasks_succeeded"), failed = CounterOf(st.counters(), "tasks_failed");
  double now = SteadySeconds();
  if (last_done_ >= 0 && now > last_sample_) {
    p.tasks_per_s = static_cast<double>(done - last_done_ + failed - last_failed_) / (now - last_sample_);
    p.failed_per_s = static_cast<double>(failed - last_failed_) / (now - last_sample_);
  }
  int64_t running = 0;
  for (const auto& n : st.nodes()) running += n.running_tasks();
  auto [queued, oldest] = head_.tasks().QueuedTasks();
  int64_t waiting = std::max<int64_t>(0, static_cast<int64_t>(head_.tasks().unfinished_tasks()) - queued - running);
  p.queued = queued;
  nlohmann::json j = StatusJson(st);
  j.erase("counters");  // the page does not show them; a snapshot a second stays small
  for (auto& n : j["nodes"]) n.erase("counters");
  j["point"] = PointJson(p);
  j["tasks"] = {{"queued", queued}, {"running", running}, {"waiting", waiting}, {"succeeded", done}, {"failed", failed},
                {"journal_version", head_.tasks().journal().version()}};
  nlohmann::json queues = nlohmann::json::array();
  for (const auto& q : head_.durable().queues().QueueFigures())
    queues.push_back({{"name", q.name}, {"ready", q.ready}, {"running", q.running},
                      {"oldest_ready_s", q.oldest_ready_s}, {"concurrency", q.concurrency}, {"weight", q.weight}});
  j["queues"] = std::move(queues);
  // Every 5 s the figures become a history point (rates over those 5 s).
  if (last_done_ < 0 || now - last_sample_ >= 5) {
    if (last_done_ >= 0) {
      history_.push_back(p);
      if (history_.size() > kHistoryPoints) history_.pop_front();
    }
    last_done_ = done;
    last_failed_ = failed;
    last_sample_ = now;
  }
  return j;
}

void Dashboard::Tick() {
  // Live updates while a tab is open; the history is kept either way (cheap: every 5 s).
  streams_seen_ = http_.event_streams();
  if (http_.event_streams() > 0 || ++ticks_ % 5 == 0) {
    nlohmann::json snapshot = Snapshot();
    if (http_.event_streams() > 0) http_.Publish("snapshot", JsonText(snapshot));
  }
  timer_.expires_after(std::chrono::seconds(1));
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!ec && *alive) Tick();
  });
}

}  // namespace corral::head
