#include "corral/head/rest_api.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "corral/base/ids.h"
#include "corral/base/version.h"
#include "corral/head/head_server.h"
#include "corral/head/http_server.h"
#include "corral/head/metrics_text.h"
#include "corral/head/status_json.h"

namespace corral::head {

namespace {

// Field `key` of `body` as a whole number in [lo, hi] (absent: `fallback`); anything else throws
// std::invalid_argument. (A JSON number converted to an int unchecked is undefined when it is out of
// range: the fuzzer found 7.7e98 as a priority.)
int64_t WholeNumber(const nlohmann::json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return fallback;
  double v = it->is_number() ? it->get<double>() : std::nan("");
  if (!(v >= static_cast<double>(lo) && v <= static_cast<double>(hi)) || v != std::floor(v))
    throw std::invalid_argument(fmt::format("'{}' must be a whole number from {} to {}", key, lo, hi));
  return static_cast<int64_t>(v);
}

}  // namespace

void RegisterRestApi(HttpServer& http, HeadServer& head) {
  DurableQueue* durable = &head.durable();
  http.Route("GET", "/api/v1/health", std::nullopt, [&head](const HttpRequest&, HttpRespond respond) {
    nlohmann::json j;
    j["status"] = "ok";
    j["version"] = CORRAL_VERSION;
    j["session_id"] = Hex(head.session_id());
    respond(HttpResponse::Json(200, JsonText(j)));
  });
  // Prometheus scrapes this with a read token (deploy/prometheus/prometheus.yml).
  http.Route("GET", "/metrics", Role::kRead, [&head, &http](const HttpRequest&, HttpRespond respond) {
    MetricsText out;
    head.WriteMetrics(out);
    out.Family("corral_http_connections", "gauge", "Open connections to the head's HTTP port.");
    out.Sample("corral_http_connections", {}, static_cast<double>(http.open_connections()));
    out.Family("corral_http_requests_total", "counter", "HTTP requests the head answered.");
    out.Sample("corral_http_requests_total", {}, static_cast<double>(http.requests()));
    respond(HttpResponse::Text(200, out.text(), "text/plain; version=0.0.4; charset=utf-8"));
  });
  http.Route("GET", "/api/v1/status", Role::kRead, [&head](const HttpRequest&, HttpRespond respond) {
    respond(HttpResponse::Json(200, JsonText(StatusJson(head.BuildStatus()))));
  });
  http.Route("GET", "/api/v1/nodes", Role::kRead, [&head](const HttpRequest&, HttpRespond respond) {
    nlohmann::json j = nlohmann::json::array();
    proto::ClusterStatus st = head.BuildStatus();
    for (const auto& n : st.nodes()) j.push_back(NodeJson(n));
    respond(HttpResponse::Json(200, JsonText(j)));
  });
  http.Route("GET", "/api/v1/actors", Role::kRead, [&head](const HttpRequest&, HttpRespond respond) {
    nlohmann::json j = nlohmann::json::array();
    proto::ClusterStatus st = head.BuildStatus();
    for (const auto& a : st.actors()) j.push_back(ActorJson(a));
    respond(HttpResponse::Json(200, JsonText(j)));
  });
  http.Route("POST", "/api/v1/tasks", Role::kSubmit, [&head, durable](const HttpRequest& req, HttpRespond respond) {
    nlohmann::json body = ParseUntrustedJson(req.body);
    if (body.is_discarded() || !body.is_object())
      return respond(HttpResponse::Error(400, "the body must be a JSON object nested at most 64 deep, e.g. "
                                              "{\"function\": \"tasks:process_data\", \"args\": [\"/data/x.csv\"]}"));
    auto fn = body.find("function");
    if (fn == body.end() || !fn->is_string() || fn->get<std::string>().empty())
      return respond(HttpResponse::Error(400, "'function' (a string, 'module:qualname') is required"));
    std::string function = fn->get<std::string>();
    nlohmann::json args = body.value("args", nlohmann::json::array());
    nlohmann::json kwargs = body.value("kwargs", nlohmann::json::object());
    if (!args.is_array() || !kwargs.is_object())
      return respond(HttpResponse::Error(400, "'args' must be a JSON array and 'kwargs' a JSON object"));
    proto::DurableSubmit submit;
    proto::DurableTaskSpec* t = submit.add_tasks();
    t->set_id(Hex(RandomBytes(16)));
    t->set_function(function);
    t->set_args(JsonText(nlohmann::json::array({args, kwargs})));
    t->set_args_format("json");
    try {
      t->set_queue(body.value("queue", std::string("default")));
      t->set_priority(static_cast<int32_t>(WholeNumber(body, "priority", 0, -1'000'000, 1'000'000)));
      t->set_idempotency_key(body.value("idempotency_key", std::string()));
      t->set_max_retries(static_cast<int32_t>(WholeNumber(body, "max_retries", 0, 0, 1'000'000)));
      t->set_retry_backoff_s(body.value("retry_backoff", 0.0));
      int64_t now = head.clock().WallNs();
      auto seconds = [&](const char* key) {
        double v = body[key].get<double>();
        if (!(v >= 0 && v <= 1e9)) throw std::invalid_argument(std::string(key) + " must be 0 to 1e9 seconds");
        return now + static_cast<int64_t>(v * 1e9);
      };
      if (body.contains("countdown")) t->set_eta_ns(seconds("countdown"));
      if (body.contains("expires")) t->set_expires_ns(seconds("expires"));
    } catch (const nlohmann::json::exception& e) {
      return respond(HttpResponse::Error(400, std::string("a field has the wrong type: ") + e.what()));
    } catch (const std::invalid_argument& e) {
      return respond(HttpResponse::Error(400, e.what()));
    }
    durable->Submit(submit, [respond](proto::Reply r) {
      if (!r.error().empty()) return respond(HttpResponse::Error(400, r.error()));
      nlohmann::json j;
      j["id"] = r.submitted_ids(0);
      j["created"] = r.inserted(0);
      respond(HttpResponse::Json(r.inserted(0) ? 201 : 200, JsonText(j)));
    });
  });
  http.Route("GET", "/api/v1/tasks/{id}", Role::kRead, [durable](const HttpRequest& req, HttpRespond respond) {
    proto::DurableGet get;
    get.set_id(req.params.at("id"));
    durable->Get(get, [respond](proto::Reply r) {
      if (!r.error().empty()) return respond(HttpResponse::Error(500, r.error()));
      const proto::DurableTaskInfo& t = r.durable();
      if (!t.found()) return respond(HttpResponse::Error(404, fmt::format("no durable task {}", t.id())));
      nlohmann::json j;
      j["id"] = t.id();
      j["function"] = t.function();
      j["state"] = t.state();
      j["attempt"] = t.attempt();
      j["runs"] = t.runs();
      j["queue"] = t.queue();
      j["error"] = t.error().empty() ? nlohmann::json(nullptr) : nlohmann::json(t.error());
      j["result"] = nullptr;
      if (t.state() == "SUCCESS") {
        nlohmann::json value = t.result_format() == "json" ? nlohmann::json::parse(t.result(), nullptr, false)
                                                             : nlohmann::json(nlohmann::json::value_t::discarded);
        if (!value.is_discarded())
          j["result"] = std::move(value);
        else if (t.result_format() == "json")
          j["result_note"] = "the result is not valid JSON (NaN or Infinity?): read it with corral.result(id).get()";
        else
          j["result_note"] = "the result is a Python pickle: read it with corral.result(id).get()";
      }
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
  http.Route("POST", "/api/v1/tasks/{id}/revoke", Role::kSubmit, [durable](const HttpRequest& req, HttpRespond respond) {
    proto::DurableGet get;
    get.set_id(req.params.at("id"));
    durable->Cancel(get, [respond](proto::Reply r) {
      if (!r.error().empty()) return respond(HttpResponse::Error(500, r.error()));
      if (!r.durable().found()) return respond(HttpResponse::Error(404, fmt::format("no durable task {}", r.durable().id())));
      nlohmann::json j;
      j["id"] = r.durable().id();
      j["state"] = r.durable().state();
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
  http.Route("GET", "/api/v1/schedules", Role::kRead, [durable](const HttpRequest&, HttpRespond respond) {
    durable->Schedule(proto::ScheduleRequest(), [respond](proto::Reply r) {
      if (!r.error().empty()) return respond(HttpResponse::Error(500, r.error()));
      nlohmann::json j = nlohmann::json::array();
      for (const auto& s : r.schedules())
        j.push_back({{"name", s.name()}, {"function", s.function()}, {"cron", s.cron()}, {"every_s", s.every_s()},
                     {"tz", s.tz()}, {"misfire", s.misfire()}, {"queue", s.queue()}, {"paused", s.paused()},
                     {"last_slot_ns", s.last_slot_ns()}, {"next_slot_ns", s.next_slot_ns()}});
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
  http.Route("GET", "/api/v1/queues", Role::kRead, [durable](const HttpRequest&, HttpRespond respond) {
    durable->Queues(proto::QueueRequest(), [respond](proto::Reply r) {
      if (!r.error().empty()) return respond(HttpResponse::Error(500, r.error()));
      nlohmann::json j = nlohmann::json::array();
      for (const auto& q : r.queues())
        j.push_back({{"name", q.name()}, {"weight", q.weight()}, {"concurrency", q.concurrency()},
                     {"rate_per_s", q.rate_per_s()}, {"labels", q.labels()}, {"resources", q.resources()},
                     {"ready", q.ready()}, {"waiting", q.waiting()}, {"running", q.running()},
                     {"succeeded", q.succeeded()}, {"failed", q.failed()}, {"slots", q.slots()}});
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
  http.Route("GET", "/api/v1/tasks", Role::kRead, [durable](const HttpRequest& req, HttpRespond respond) {
    proto::DurableList list;
    if (req.query.contains("state")) list.set_state(req.query.at("state"));
    if (req.query.contains("queue")) list.set_queue(req.query.at("queue"));
    if (req.query.contains("after")) list.set_after_id(req.query.at("after"));
    try {
      list.set_limit(req.query.contains("limit") ? std::stoi(req.query.at("limit")) : 100);
    } catch (const std::exception&) {
      return respond(HttpResponse::Error(400, "limit must be a whole number"));
    }
    durable->List(list, /*with_args=*/false, [respond](proto::Reply r) {
      if (!r.error().empty()) return respond(HttpResponse::Error(400, r.error()));
      nlohmann::json j = nlohmann::json::array();
      for (const auto& t : r.durable_list())
        j.push_back({{"id", t.id()}, {"function", t.function()}, {"state", t.state()}, {"attempt", t.attempt()},
                     {"queue", t.queue()}, {"error", t.error().empty() ? nlohmann::json(nullptr) : nlohmann::json(t.error())}});
      respond(HttpResponse::Json(200, JsonText(j)));
    });
  });
  http.Route("POST", "/api/v1/nodes/{node}/drain", Role::kAdmin, [&head](const HttpRequest& req, HttpRespond respond) {
    proto::DrainRequest d;
    d.set_node(req.params.at("node"));
    d.set_leave(req.query.contains("leave") ? req.query.at("leave") != "false" : true);
    try {
      d.set_timeout_s(req.query.contains("timeout") ? std::stod(req.query.at("timeout")) : 60);
    } catch (const std::exception&) {
      respond(HttpResponse::Error(400, "timeout must be a number of seconds"));
      return;
    }
    if (Status s = head.Drain(d); !s.ok()) {
      respond(HttpResponse::Error(s.code() == Code::kNotFound ? 404 : 409, s.message()));
      return;
    }
    respond(HttpResponse::Json(202, R"({"draining": true})"));
  });
}

}  // namespace corral::head
