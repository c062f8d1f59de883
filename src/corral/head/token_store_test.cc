// Tokens: created with a role, authenticated by secret (stored hashed), expired and revoked.
#include "corral/head/token_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "corral/base/files.h"
#include "corral/base/ids.h"

namespace corral::head {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

std::string TempPath(const char* name) {
  return ::testing::TempDir() + "/corral-tokens-" + std::to_string(getpid()) + "-" + name + ".json";
}

TEST(TokenStore, CreatedTokenAuthenticatesWithItsRoleAndIsStoredHashed) {
  std::string path = TempPath("create");
  auto store = TokenStore::Open(path, "admin-secret");
  ASSERT_TRUE(store);
  auto secret = store->Create("ci", Role::kRead, 0, 100);
  ASSERT_TRUE(secret) << secret.error().ToString();
  auto who = store->Authenticate(*secret, 200);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(who->role, Role::kRead);
  EXPECT_EQ(store->Authenticate("admin-secret", 200)->role, Role::kAdmin);
  std::string file = *ReadFile(path);
  EXPECT_EQ(file.find(secret->substr(16)), std::string::npos) << "the secret itself is never stored";
  // Another process (a restarted head) reads it back.
  auto again = TokenStore::Open(path, "admin-secret");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->Authenticate(*secret, 300)->name, "ci");
  unlink(path.c_str());
}

TEST(TokenStore, WrongSecretsAreRefused) {
  auto store = TokenStore::Open(TempPath("wrong"), "admin-secret");
  auto secret = store->Create("ci", Role::kSubmit, 0, 0);
  std::string forged = *secret;
  forged.back() = forged.back() == '0' ? '1' : '0';  // the right id, a wrong secret
  for (std::string_view bad : {std::string_view(forged), std::string_view("ct_"), std::string_view(""),
                               std::string_view("admin-secreT"), std::string_view(secret->substr(0, 20))}) {
    auto r = store->Authenticate(bad, 0);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Code::kPermissionDenied);
  }
}

TEST(TokenStore, ExpiredAndRevokedTokensAreRefused) {
  auto store = TokenStore::Open(TempPath("expire"), "admin-secret");
  auto short_lived = store->Create("short", Role::kSubmit, 60, 1000 * kSecond);
  auto other = store->Create("other", Role::kSubmit, 0, 1000 * kSecond);
  EXPECT_TRUE(store->Authenticate(*short_lived, 1059 * kSecond));
  EXPECT_FALSE(store->Authenticate(*short_lived, 1060 * kSecond));
  auto id = store->Authenticate(*other, 0)->id;
  EXPECT_TRUE(store->Live(id, 0));
  EXPECT_TRUE(store->Revoke("other"));
  EXPECT_FALSE(store->Live(id, 0));
  EXPECT_FALSE(store->Authenticate(*other, 0));
  EXPECT_EQ(store->Revoke("other").error().code(), Code::kNotFound);
  EXPECT_FALSE(store->Revoke("admin"));  // the built-in one is rotated by its file
}

TEST(TokenStore, AJoinTokenIsSingleUseUnlessItHasATimeToLive) {
  auto store = TokenStore::Open(TempPath("join"), "admin-secret");
  auto once = store->Create("laptop", Role::kJoin, 0, 0);
  auto hour = store->Create("rack", Role::kJoin, 3600, 0);
  ASSERT_TRUE(once && hour);
  EXPECT_TRUE(once->starts_with("cj_"));
  auto who = store->Authenticate(*once, 0);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->role, Role::kJoin);
  EXPECT_TRUE(who->single_use);
  EXPECT_TRUE(store->Used(who->id).ok());
  EXPECT_FALSE(store->Authenticate(*once, 0)) << "spent by the node that joined with it";
  auto many = store->Authenticate(*hour, 0);
  ASSERT_TRUE(many);
  EXPECT_TRUE(store->Used(many->id).ok());
  EXPECT_TRUE(store->Authenticate(*hour, 10 * kSecond)) << "a join token with a time to live joins any number";
  EXPECT_FALSE(store->Authenticate(*hour, 3600 * kSecond));
  // The prefix says what it is: a join token's id under another prefix is refused.
  std::string as_client = "ct_" + hour->substr(3);
  EXPECT_FALSE(store->Authenticate(as_client, 0));
}

TEST(TokenStore, AWorkerCredentialIsTheNodesUntilItExpires) {
  auto store = TokenStore::Open(TempPath("worker"), "admin-secret");
  std::string token = store->WorkerToken("node-1", 100 * kSecond);
  auto who = store->Authenticate(token, 99 * kSecond);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->role, Role::kWorker);
  EXPECT_EQ(who->id, "w:" + Hex(std::string("node-1")));
  EXPECT_FALSE(store->Authenticate(token, 100 * kSecond)) << "expired";
  // A later expiry written into it does not carry the MAC.
  std::string stretched = token;
  stretched.replace(stretched.find("_100_"), 5, "_900_");
  EXPECT_FALSE(store->Authenticate(stretched, 99 * kSecond));
  // An expiry past what nanoseconds can hold is refused, not overflowed (found by fuzzing).
  EXPECT_FALSE(store->Authenticate("cw_00_44444444444444_00", 0));
  EXPECT_FALSE(store->Authenticate("cw_00_9999999999_00", 0));
  // Another head (another admin secret) does not accept it.
  auto other = TokenStore::Open(TempPath("worker2"), "other-secret");
  EXPECT_FALSE(other->Authenticate(token, 99 * kSecond));
}

TEST(TokenStore, ADamagedFileIsRefusedNotTrusted) {
  // Found by fuzzing: an entry that is not an object threw, and a huge float as a time was
  // converted to an integer unchecked (undefined).
  std::string path = TempPath("damaged");
  std::string good = R"("id": "0123456789ab", "name": "x", "role": "read", "sha256": ")" + std::string(64, 'a') + "\"";
  for (const std::string& text : {std::string(R"({"tokens": [1]})"), std::string(R"({"tokens": [{"role": 5}]})"),
                                  R"({"tokens": [{)" + good + R"(, "created_ns": 7.7e98}]})"}) {
    ASSERT_TRUE(WriteFile(path, text, 0600).ok());
    auto store = TokenStore::Open(path, "admin-secret");
    ASSERT_FALSE(store) << text;
    EXPECT_EQ(store.error().code(), Code::kFailedPrecondition);
  }
  ASSERT_TRUE(WriteFile(path, R"({"tokens": [{)" + good + R"(, "created_ns": 5}]})", 0600).ok());
  EXPECT_TRUE(TokenStore::Open(path, "admin-secret"));
  unlink(path.c_str());
}

TEST(TokenStore, NamesAreUniqueAndChecked) {
  auto store = TokenStore::Open(TempPath("names"), "a");
  EXPECT_TRUE(store->Create("ci", Role::kRead, 0, 0));
  EXPECT_EQ(store->Create("ci", Role::kAdmin, 0, 0).error().code(), Code::kAlreadyExists);
  EXPECT_FALSE(store->Create("", Role::kRead, 0, 0));
  EXPECT_FALSE(store->Create("admin", Role::kRead, 0, 0));
  EXPECT_FALSE(store->Create("bad name\n", Role::kRead, 0, 0));
  auto names = store->List();
  ASSERT_EQ(names.size(), 2u);  // the built-in admin, then ci
  EXPECT_EQ(names[0].name, "admin");
}

}  // namespace
}  // namespace corral::head
