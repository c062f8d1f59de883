// Fuzz target for the head's HTTP request path: arbitrary request lines, headers, targets, queries
// and bodies go through the same parsing, gate (Host, token or session cookie, CSRF) and routes
// (REST, /metrics, the dashboard's) as a connection's, on a real HeadServer with an in-memory
// store. Every input must get exactly one answer, whose body is valid JSON when it says it is
// JSON, and nothing may crash, throw out or hang.
//
// The first byte picks how the rest is used, so mutations reach past the gate:
//   0: the whole raw request;   1: the body of an authorised POST /api/v1/tasks;
//   2: the target of an authorised GET;   3: extra header lines of GET /api/v1/nodes;
//   4: the body of a login (JSON or form, by the next byte);   5: the Cookie and X-CSRF-Token
//   headers of a drain (a state-changing request made with a session).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "corral/base/log.h"
#include "corral/head/dashboard.h"
#include "corral/head/head_server.h"
#include "corral/head/http_server.h"
#include "corral/head/rest_api.h"

namespace {

using namespace corral;

struct Head {
  Head() {
    SetLogLevel(LogLevel::kError);
    head::HeadOptions options;
    options.listen = {"127.0.0.1", 0, ""};
    options.token = "t";
    server = std::make_unique<head::HeadServer>(io, options);
    if (Status s = server->Start(); !s.ok()) {
      std::fprintf(stderr, "http_fuzz: the head cannot start: %s\n", s.ToString().c_str());
      std::abort();
    }
    head::HttpOptions ho;
    ho.listen = {"127.0.0.1", 0, ""};
    ho.token = "t";
    ho.free_failures = 1 << 30;  // wrong tokens answered at once: the run is about parsing
    http = std::make_unique<head::HttpServer>(io, ho);
    head::RegisterRestApi(*http, *server);
    dashboard = std::make_unique<head::Dashboard>(io, *http, *server);
  }
  boost::asio::io_context io;
  std::unique_ptr<head::HeadServer> server;
  std::unique_ptr<head::HttpServer> http;
  std::unique_ptr<head::Dashboard> dashboard;
};

std::string Request(std::string_view input) {
  if (input.empty()) return "";
  char mode = input[0] % 6;
  std::string_view rest = input.substr(1);
  const std::string auth = "Host: 127.0.0.1\r\nAuthorization: Bearer t\r\n";
  switch (mode) {
    case 1:
      return "POST /api/v1/tasks HTTP/1.1\r\n" + auth + "Content-Type: application/json\r\nContent-Length: " +
             std::to_string(rest.size()) + "\r\n\r\n" + std::string(rest);
    case 2: return "GET " + std::string(rest) + " HTTP/1.1\r\n" + auth + "\r\n";
    case 3: return "GET /api/v1/nodes HTTP/1.1\r\n" + std::string(rest) + "\r\n\r\n";
    case 4: {
      bool json = !rest.empty() && (rest[0] & 1);
      std::string_view body = rest.empty() ? rest : rest.substr(1);
      return std::string("POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ") +
             (json ? "application/json" : "application/x-www-form-urlencoded") +
             "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
    }
    case 5: return "POST /api/v1/nodes/00/drain HTTP/1.1\r\nHost: 127.0.0.1\r\n" + std::string(rest) +
                   "\r\nContent-Length: 0\r\n\r\n";
    default: return std::string(rest);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Head* head = new Head();  // one head for the whole run, as a real one serves many requests
  int answers = 0;
  head::HttpResponse last;
  head->http->HandleRaw(Request(std::string_view(reinterpret_cast<const char*>(data), size)), "192.0.2.1",
                        [&](head::HttpResponse r) {
                          ++answers;
                          last = std::move(r);
                        });
  // Some answers come after a store round trip: run the loop until the answer is in.
  for (int i = 0; i < 2000 && answers == 0; ++i) head->io.run_for(std::chrono::milliseconds(1));
  bool json = last.content_type == "application/json" && !last.event_stream;
  if (answers != 1 || last.status < 200 || last.status > 599 ||
      (json && nlohmann::json::parse(last.body, nullptr, false).is_discarded())) {
    std::fprintf(stderr, "http_fuzz: %d answers, status %d, body %s\n", answers, last.status, last.body.c_str());
    std::abort();
  }
  return 0;
}
