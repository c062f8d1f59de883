// How a request fails in its Reply: the message and the code, so the client can tell a transient
// failure (UNAVAILABLE: the durable store failed; asking again may work) from a refusal.
#pragma once

#include <string>

#include "corral/base/status.h"
#include "corral/client.pb.h"

namespace corral::head {

inline void SetError(proto::Reply& reply, const Status& status) {
  reply.set_error(status.message());
  reply.set_error_code(static_cast<uint32_t>(status.code()));
}

// A failure of the durable store, for the reply: transient whatever SQLite said.
inline Status StoreFailed(const Status& status) {
  return Status(Code::kUnavailable, "the durable store failed: " + status.message() + "; try again");
}

}  // namespace corral::head
