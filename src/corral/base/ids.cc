#include "corral/base/ids.h"

#include <cctype>

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

namespace corral {

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(out.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::abort();  // no entropy source: nothing sensible to continue with
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string ShortHex(std::string_view bytes, size_t n) { return Hex(bytes).substr(0, n); }

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> FromHex(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::string MakeTaskId(std::string_view client_prefix, uint64_t counter) {
  std::string id(client_prefix.substr(0, 8));
  id.resize(8, '\0');
  for (int i = 7; i >= 0; --i) id.push_back(static_cast<char>((counter >> (i * 8)) & 0xff));
  return id;
}

std::string TaskIdText(std::string_view id) {
  // Durable ids are text; the others are raw bytes (a client id, then a counter with zero bytes).
  bool text = !id.empty();
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '#' || c == '.')) text = false;
  return text ? std::string(id) : Hex(id);
}

}  // namespace corral
