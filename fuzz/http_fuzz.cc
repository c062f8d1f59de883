// Fuzz target for the head's HTTP request path: arbitrary request lines, headers, targets, queries
// and bodies go through the same parsing, gate (Host, token) and REST routes as a connection's,
// on a real HeadServer with an in-memory store. Every input must get exactly one answer whose body
// is valid JSON, and nothing may crash, throw out or hang.
//
// The first byte picks how the rest is used, so mutations reach past the gate:
//   0: the whole raw request;   1: the body of an authorised POST /api/v1/tasks;
//   2: the target of an authorised GET;   3: extra header lines of GET /api/v1/nodes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "corral/base/log.h"
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
  }
  boost::asio::io_context io;
  std::unique_ptr<head::HeadServer> server;
  std::unique_ptr<head::HttpServer> http;
};

std::string Request(std::string_view input) {
  if (input.empty()) return "";
  char mode = input[0] % 4;
  std::string_view rest = input.substr(1);
  const std::string auth = "Host: 127.0.0.1\r\nAuthorization: Bearer t\r\n";
  switch (mode) {
    case 1:
      return "POST /api/v1/tasks HTTP/1.1\r\n" + auth + "Content-Type: application/json\r\nContent-Length: " +
             std::to_string(rest.size()) + "\r\n\r\n" + std::string(rest);
    case 2: return "GET " + std::string(rest) + " HTTP/1.1\r\n" + auth + "\r\n";
    case 3: return "GET /api/v1/nodes HTTP/1.1\r\n" + std::string(rest) + "\r\n\r\n";
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
  if (answers != 1 || last.status < 200 || last.status > 599 ||
      nlohmann::json::parse(last.body, nullptr, false).is_discarded()) {
    std::fprintf(stderr, "http_fuzz: %d answers, status %d, body %s\n", answers, last.status, last.body.c_str());
    std::abort();
  }
  return 0;
}
