// Versions that travel in every handshake.
#pragma once

#include <cstdint>

namespace corral {

// Bumped on any incompatible change to the messages in proto/corral.
inline constexpr uint32_t kProtocolVersion = 2;  // 2: function hashes are SHA-256/128, checked; tokens with roles

}  // namespace corral
