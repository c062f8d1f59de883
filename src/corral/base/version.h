// Versions that travel in every handshake.
#pragma once

#include <cstdint>

namespace corral {

// Bumped on any incompatible change to the messages in proto/corral.
inline constexpr uint32_t kProtocolVersion = 1;

}  // namespace corral
