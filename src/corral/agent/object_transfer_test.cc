#include "corral/agent/object_transfer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include <gtest/gtest.h>

#include "corral/objects/node_store.h"

namespace corral::agent {
namespace {

namespace fs = std::filesystem;

// Two stores (a holder and a puller) in temp dirs, each with its ObjectTransfer on 127.0.0.1.
class ObjectTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("transfer-test-" + std::to_string(getpid()));
    for (const char* d : {"a", "a-spill", "b", "b-spill"}) fs::create_directories(root_ / d);
    a_ = std::make_unique<ObjectTransfer>(io_, root_ / "a", root_ / "a-spill");
    b_ = std::make_unique<ObjectTransfer>(io_, root_ / "b", root_ / "b-spill");
    a_->SetSecret("cluster secret 0123456789abcdef!");
    b_->SetSecret("cluster secret 0123456789abcdef!");
    auto port = a_->Listen("127.0.0.1");
    ASSERT_TRUE(port.has_value()) << port.error().ToString();
    source_ = {"node-a", "127.0.0.1", *port};
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    fs::remove_all(root_);
  }
  std::string Write(const fs::path& dir, const std::string& id, uint32_t attempt, size_t size) {
    std::string data(size, '\0');
    std::mt19937_64 rng(size);
    for (char& c : data) c = static_cast<char>(rng());
    std::ofstream(dir / objects::NodeStore::FileName(id, attempt), std::ios::binary) << data;
    return data;
  }
  static std::string Read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  PullResult PullNow(PullJob job) {
    std::optional<PullResult> out;
    auto guard = boost::asio::make_work_guard(io_);
    b_->Pull(std::move(job), [&](PullResult r) {
      out = std::move(r);
      guard.reset();
    });
    io_.restart();
    io_.run();
    return std::move(*out);
  }

  boost::asio::io_context io_;
  fs::path root_;
  std::unique_ptr<ObjectTransfer> a_, b_;
  PullSource source_;
};

TEST_F(ObjectTransferTest, PullsAWholeObjectIntoTheStoreUnderItsName) {
  std::string data = Write(root_ / "a", "id-1", 2, (3u << 20) + 17);
  PullResult r = PullNow({"id-1", 2, data.size(), {source_}});
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.bytes, data.size());
  EXPECT_EQ(Read(root_ / "b" / objects::NodeStore::FileName("id-1", 2)), data);
  for (const auto& e : fs::directory_iterator(root_ / "b"))  // no partial file left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST_F(ObjectTransferTest, WritesOverAFileTheStoreKeptForReuse) {
  std::string data = Write(root_ / "a", "id-3", 0, (2u << 20) + 5);
  fs::create_directories(root_ / "b" / ".free");
  std::string bigger = Write(root_ / "b" / ".free", "x", 0, (3u << 20));  // older bytes, larger than the value
  fs::rename(root_ / "b" / ".free" / objects::NodeStore::FileName("x", 0),
             root_ / "b" / ".free" / (std::to_string(bigger.size()) + "-old"));
  struct stat before{};
  ASSERT_EQ(stat((root_ / "b" / ".free" / (std::to_string(bigger.size()) + "-old")).c_str(), &before), 0);
  PullResult r = PullNow({"id-3", 0, data.size(), {source_}});
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  fs::path got = root_ / "b" / objects::NodeStore::FileName("id-3", 0);
  EXPECT_EQ(Read(got), data);  // exactly the value: the older bytes past it are cut
  struct stat after{};
  ASSERT_EQ(stat(got.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_TRUE(fs::is_empty(root_ / "b" / ".free"));
}

TEST_F(ObjectTransferTest, ServesASpilledObjectToo) {
  std::string data = Write(root_ / "a-spill", "id-2", 0, 200000);
  PullResult r = PullNow({"id-2", 0, data.size(), {source_}});
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Read(root_ / "b" / objects::NodeStore::FileName("id-2", 0)), data);
}

TEST_F(ObjectTransferTest, ASourceWithoutTheObjectIsReportedAndTheNextOneIsTried) {
  // "node-c" serves b's own directory... which lacks the object; a holds it.
  ObjectTransfer c(io_, root_ / "b-spill", root_ / "b-spill");
  c.SetSecret("cluster secret 0123456789abcdef!");
  auto port = c.Listen("127.0.0.1");
  ASSERT_TRUE(port.has_value());
  std::string data = Write(root_ / "a", "id-3", 1, 150000);
  PullResult r = PullNow({"id-3", 1, data.size(), {{"node-c", "127.0.0.1", *port}, source_}});
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.missing_on, std::vector<std::string>{"node-c"});
  EXPECT_EQ(Read(root_ / "b" / objects::NodeStore::FileName("id-3", 1)), data);
}

TEST_F(ObjectTransferTest, NoSourceHoldingItIsAnErrorAndLeavesNoFile) {
  PullResult r = PullNow({"nothing", 0, 1000, {source_}});
  EXPECT_EQ(r.status.code(), Code::kNotFound) << r.status.ToString();
  EXPECT_EQ(r.missing_on, std::vector<std::string>{"node-a"});
  EXPECT_TRUE(fs::is_empty(root_ / "b"));
}

TEST_F(ObjectTransferTest, APullerWithAnotherSecretIsRefused) {
  Write(root_ / "a", "id-4", 0, 1000);
  b_->SetSecret("some other cluster's secret.....");
  PullResult r = PullNow({"id-4", 0, 1000, {source_}});
  EXPECT_EQ(r.status.code(), Code::kUnavailable) << r.status.ToString();
  EXPECT_TRUE(r.missing_on.empty());
  EXPECT_TRUE(fs::is_empty(root_ / "b"));
}

TEST_F(ObjectTransferTest, ASizeThatDisagreesWithTheHolderIsAnError) {
  Write(root_ / "a", "id-5", 0, 1000);
  PullResult r = PullNow({"id-5", 0, 999, {source_}});
  EXPECT_FALSE(r.status.ok());
  EXPECT_TRUE(fs::is_empty(root_ / "b"));
}

TEST_F(ObjectTransferTest, AnUnreachableSourceIsAnErrorNotAHang) {
  a_->Stop();
  PullResult r = PullNow({"id-6", 0, 1000, {source_}});
  EXPECT_EQ(r.status.code(), Code::kUnavailable) << r.status.ToString();
}

}  // namespace
}  // namespace corral::agent
