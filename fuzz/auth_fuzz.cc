// Fuzz target for what a peer sends before and after authenticating: arbitrary bytes as a client
// message (the policy must give it a role or refuse it), as a token (never accepted unless it is
// one), and as the head's configuration files: tokens.json and nodes.json (a damaged file is
// refused, never crashes the head).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "corral/base/files.h"
#include "corral/head/auth_policy.h"
#include "corral/head/node_book.h"
#include "corral/head/token_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = (google::protobuf::SetLogHandler(nullptr), true);  // parse errors are expected
  (void)quiet;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  corral::proto::ClientToHead msg;
  if (msg.ParseFromArray(data, static_cast<int>(size))) (void)corral::head::RequiredRole(msg);  // any answer, no crash
  {
    corral::head::TokenStore none = *corral::head::TokenStore::Open("", "admin-secret-of-the-fuzz-run");
    if (none.Authenticate(input, 0) && input != "admin-secret-of-the-fuzz-run") {
      std::fprintf(stderr, "auth_fuzz: arbitrary input authenticated\n");
      std::abort();
    }
  }
  if (input.empty() || input[0] != '{') return 0;  // a file: only JSON-looking inputs (disk is slow)
  static const std::string path = "/tmp/corral-auth-fuzz-" + std::to_string(getpid()) + ".json";
  (void)corral::WriteFile(path, std::string(input), 0600);
  auto store = corral::head::TokenStore::Open(path, "admin-secret-of-the-fuzz-run");
  if (store) {
    for (const auto& t : store->List()) (void)t;
    // Only the admin secret and tokens this run made may authenticate; the file holds hashes only.
    if (store->Authenticate(input, 0) && input != "admin-secret-of-the-fuzz-run") {
      std::fprintf(stderr, "auth_fuzz: arbitrary input authenticated\n");
      std::abort();
    }
  }
  if (auto book = corral::head::NodeBook::Open(path)) {  // the same bytes as nodes.json
    for (const auto& [id, caps] : book->caps()) (void)book->revoked(id);
    (void)book->joined_count();
  }
  return 0;
}
