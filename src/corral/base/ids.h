// Identifiers: random ids for nodes, clients and workers; task ids made by the submitting client.
//
// A task id is 16 bytes: the client's 8-byte random prefix, then an 8-byte big-endian counter.
// Made by the client, so a retried submission is recognisably the same task. The object holding a
// task's return value has the task's id. Functions are free and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace corral {

// `n` bytes from the OS's cryptographic random source.
std::string RandomBytes(size_t n);
// Lower-case hex of arbitrary bytes.
std::string Hex(std::string_view bytes);
// A task id as users see and type it: a durable task's or run's ("<task id>#<attempt>"), which are
// text, as it is; any other (raw bytes) in hex (ObjectRef.hex()).
std::string TaskIdText(std::string_view id);
// The first `n` hex digits, for logs and tables.
std::string ShortHex(std::string_view bytes, size_t n = 8);
// Parses lower/upper-case hex; returns false on odd length or a non-hex digit.
// The bytes `hex` spells, or nothing when it is not an even number of hex digits.
std::optional<std::string> FromHex(std::string_view hex);

std::string MakeTaskId(std::string_view client_prefix, uint64_t counter);

}  // namespace corral
