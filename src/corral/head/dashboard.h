// Dashboard: the web page the head serves at / and the JSON it reads, on the head's event loop.
//
// The page (web/index.html, app.js, app.css, built into the binary: no CDN, nothing fetched from
// elsewhere) logs in with a token (HttpServer's session routes), then reads:
//   GET /api/v1/events              server-sent events: a "snapshot" every second while a tab is open
//                                   (nodes, resources, task counts and rates, queues, actors, gangs)
//   GET /api/v1/history             the last hour, one point every 5 s (throughput, utilisation)
//   GET /api/v1/runs?state=&function=&queue=&node=&limit=   recent tasks, newest first (TaskJournal)
//   GET /api/v1/runs/{id}           one task: arguments summary, attempts, times, error with traceback
//   GET /api/v1/runs/{id}/log?offset=   its output, from its node's log files
//   GET /api/v1/schedules/{name}/history
// and changes things through the REST API (draining a node: admin only). io thread only.
#pragma once

#include <deque>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

namespace corral::head {

class HeadServer;
class HttpServer;

class Dashboard {
 public:
  // Adds its routes to `http`; `http` and `head` outlive it.
  Dashboard(boost::asio::io_context& io, HttpServer& http, HeadServer& head);
  ~Dashboard();
  void Start();
  void Stop();

 private:
  struct Point {
    int64_t t = 0;  // wall clock, seconds
    double tasks_per_s = 0, failed_per_s = 0;
    double cpu_used = 0, cpu_total = 0, gpu_used = 0, gpu_total = 0, memory_used = 0, memory_total = 0;
    int64_t queued = 0;
  };
  void Routes();
  void Tick();
  // The cluster now, as the page shows it (also kept as the latest history point).
  nlohmann::json Snapshot();
  static nlohmann::json PointJson(const Point& p);

  HttpServer& http_;
  HeadServer& head_;
  boost::asio::steady_timer timer_;
  std::deque<Point> history_;  // oldest first, one per 5 s, an hour's worth
  int64_t last_done_ = -1, last_failed_ = -1;
  double last_sample_ = 0;     // steady seconds of the last history point
  int ticks_ = 0;
  size_t streams_seen_ = 0;    // event streams open at the last snapshot
  // GET /api/v1/runs answers by query, valid while the journal's version is the one kept.
  std::unordered_map<std::string, std::pair<uint64_t, std::string>> runs_cache_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
