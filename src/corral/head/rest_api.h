// The head's REST API under /api/v1/: health, status, nodes, drain, durable tasks, queues and
// schedules. Handlers translate JSON to the same requests the wire protocol carries and answer
// through HttpServer's respond callback (after a store commit where there is one). io thread only.
#pragma once

namespace corral::head {

class HeadServer;
class HttpServer;

// Adds the routes to `http`; `head` outlives it.
void RegisterRestApi(HttpServer& http, HeadServer& head);

}  // namespace corral::head
