// What each message a client sends needs: the role of its token (token_store.h). One table for
// the TCP transport; the REST API names a role per route. A message this table does not know
// needs a role no token has (fails closed): adding a message type means adding it here, and the
// policy test fails until it is.
#pragma once

#include <optional>

#include "corral/client.pb.h"
#include "corral/head/token_store.h"

namespace corral::head {

// The role `message` needs; nullopt: none is enough (an unknown message or operation).
std::optional<Role> RequiredRole(const proto::ClientToHead& message);
std::optional<Role> RequiredRole(const proto::Request& request);

}  // namespace corral::head
