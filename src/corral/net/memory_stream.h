// A pair of connected in-process ByteStreams on one io_context: bytes written to one are read from
// the other, with no socket and no system call. Used to run a node's agent inside the head process
// (the embedded cluster and the head machine's own agent) while both keep speaking the ordinary
// framed protocol, so neither knows the difference. io thread only, like every ByteStream.
#pragma once

#include <memory>
#include <utility>

#include "corral/net/stream.h"

namespace corral::net {

std::pair<std::unique_ptr<ByteStream>, std::unique_ptr<ByteStream>> MakeMemoryStreamPair(
    asio::any_io_executor executor, std::string name_a, std::string name_b);

}  // namespace corral::net
