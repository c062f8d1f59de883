#include "corral/objects/node_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

namespace corral::objects {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/corral-store-test-XXXXXX";
  return mkdtemp(tmpl);
}

void WriteAt(const std::string& path, const std::string& data) { std::ofstream(path) << data; }
bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

TEST(NodeStore, OpenMakesAPrivateEmptyDirectory) {
  std::string parent = TempDir();
  std::string dir = parent + "/store";
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  WriteAt(dir + "/leftover-0", "from an earlier run");
  auto store = NodeStore::Open(dir + "/", "\x01\x02", parent + "/spill");
  ASSERT_TRUE(store.has_value()) << store.error().ToString();
  EXPECT_EQ(store->dir(), dir);
  struct stat st{};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_FALSE(Exists(dir + "/leftover-0"));
  std::ifstream marker(dir + "/.node");
  std::string text;
  std::getline(marker, text);
  EXPECT_EQ(text, "0102");
  store->RemoveAll();
  EXPECT_FALSE(Exists(dir));
  EXPECT_FALSE(Exists(parent + "/spill"));
  rmdir(parent.c_str());
}

TEST(NodeStore, KeepsFreedFilesForReuseUpToThePoolCapacity) {
  std::string parent = TempDir();
  auto store = NodeStore::Open(parent + "/store", "n", parent + "/spill");
  ASSERT_TRUE(store.has_value());
  const uint64_t mib = NodeStore::kMinPooledBytes;
  store->SetPoolCapacity(3 * mib);
  auto make = [&](const std::string& id, uint64_t size) {
    ASSERT_EQ(truncate((store->Path(id, 0)).c_str(), 0), -1);  // not there yet
    WriteAt(store->Path(id, 0), "");
    ASSERT_EQ(truncate(store->Path(id, 0).c_str(), static_cast<off_t>(size)), 0);
  };
  make("a", 2 * mib);
  make("b", 2 * mib);
  make("small", mib - 1);
  EXPECT_TRUE(store->Delete("a", 0));
  EXPECT_EQ(store->PoolBytes(), 2 * mib);                // kept
  EXPECT_TRUE(Exists(store->PoolDir() + "/" + std::to_string(2 * mib) + "-" + NodeStore::FileName("a", 0)));
  make("huge", 4 * mib);
  EXPECT_TRUE(store->Delete("huge", 0));                 // larger than the whole pool: gone
  EXPECT_TRUE(store->Delete("small", 0));                // too small to be worth keeping
  EXPECT_EQ(store->PoolBytes(), 2 * mib);
  EXPECT_TRUE(store->Delete("b", 0));                    // pushes out the file kept longer
  EXPECT_EQ(store->PoolBytes(), 2 * mib);
  EXPECT_TRUE(Exists(store->PoolDir() + "/" + std::to_string(2 * mib) + "-" + NodeStore::FileName("b", 0)));
  EXPECT_FALSE(Exists(store->PoolDir() + "/" + std::to_string(2 * mib) + "-" + NodeStore::FileName("a", 0)));
  EXPECT_FALSE(Exists(store->Path("a", 0)));
  EXPECT_FALSE(Exists(store->Path("b", 0)));
  EXPECT_TRUE(store->List().empty());                    // pooled files are not values
  EXPECT_EQ(store->EmptyPool(), 2 * mib);
  EXPECT_EQ(store->PoolBytes(), 0u);
  make("c", 2 * mib);
  EXPECT_TRUE(store->Delete("c", 0));
  auto again = NodeStore::Open(parent + "/store", "n", parent + "/spill");  // a restart empties it
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->PoolBytes(), 0u);
  again->RemoveAll();
  EXPECT_FALSE(Exists(parent + "/store"));
  rmdir(parent.c_str());
}

TEST(NodeStore, RefusesALinkInsteadOfADirectory) {
  std::string parent = TempDir();
  std::string target = parent + "/elsewhere";
  ASSERT_EQ(mkdir(target.c_str(), 0700), 0);
  ASSERT_EQ(symlink(target.c_str(), (parent + "/store").c_str()), 0);
  auto store = NodeStore::Open(parent + "/store", "n", parent + "/spill");
  ASSERT_FALSE(store.has_value());
  EXPECT_NE(store.error().message().find("not a directory this user owns"), std::string::npos);
  unlink((parent + "/store").c_str());
  rmdir(target.c_str());
  rmdir(parent.c_str());
}

TEST(NodeStore, NamesFilesByIdAndAttemptAndReadsParts) {
  std::string dir = TempDir();
  auto store = NodeStore::Open(dir + "/mem", "n", dir + "/spill");
  ASSERT_TRUE(store.has_value());
  std::string id("\x01\xab", 2);
  EXPECT_EQ(NodeStore::FileName(id, 3), "01ab-3");
  WriteAt(store->Path(id, 3), "0123456789");
  uint64_t size = 0;
  auto part = store->Read(id, 3, 4, 3, &size);
  ASSERT_TRUE(part.has_value());
  EXPECT_EQ(*part, "456");
  EXPECT_EQ(size, 10u);
  auto tail = store->Read(id, 3, 8, 100, &size);
  ASSERT_TRUE(tail.has_value());
  EXPECT_EQ(*tail, "89");
  auto past = store->Read(id, 3, 10, 100, &size);
  ASSERT_TRUE(past.has_value());
  EXPECT_EQ(*past, "");
  auto other_attempt = store->Read(id, 2, 0, 1, &size);
  ASSERT_FALSE(other_attempt.has_value());
  EXPECT_EQ(other_attempt.error().code(), Code::kNotFound);
  EXPECT_TRUE(store->Delete(id, 3));
  EXPECT_FALSE(store->Delete(id, 3));
  EXPECT_FALSE(store->Read(id, 3, 0, 1, &size).has_value());
  store->RemoveAll();
}

TEST(NodeStore, AFileAnotherProcessStillMapsIsNotPooled) {
  // A reader that dropped its reference may still hold an array in the mapping: the next writer
  // must not write over those pages.
  std::string parent = TempDir();
  auto store = NodeStore::Open(parent + "/store", "n", parent + "/spill");
  ASSERT_TRUE(store.has_value());
  const uint64_t mib = NodeStore::kMinPooledBytes;
  store->SetPoolCapacity(8 * mib);
  for (const char* id : {"mapped", "free"}) {
    WriteAt(store->Path(id, 0), "");
    ASSERT_EQ(truncate(store->Path(id, 0).c_str(), static_cast<off_t>(2 * mib)), 0);
  }
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t reader = fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {  // maps the value, closes its descriptor (as a reader does), keeps the mapping
    int fd = open(store->Path("mapped", 0).c_str(), O_RDONLY);
    void* map = mmap(nullptr, 2 * mib, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    char byte = map == MAP_FAILED ? 'x' : 'r';
    (void)!write(ready[1], &byte, 1);
    (void)!read(done[0], &byte, 1);
    _exit(0);
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  ASSERT_EQ(byte, 'r');
  EXPECT_TRUE(store->Delete("mapped", 0));
  EXPECT_EQ(store->PoolBytes(), 0u);             // deleted, its pages left to the reader
  EXPECT_FALSE(Exists(store->Path("mapped", 0)));
  EXPECT_TRUE(store->Delete("free", 0));
  EXPECT_EQ(store->PoolBytes(), 2 * mib);        // nobody maps this one: kept
  (void)!write(done[1], &byte, 1);
  int status = 0;
  waitpid(reader, &status, 0);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) close(fd);
  store->RemoveAll();
  rmdir(parent.c_str());
}

TEST(NodeStore, DeletingKeepsTheBytesOfAReaderThatMappedIt) {
  std::string dir = TempDir();
  auto store = NodeStore::Open(dir + "/mem", "n", dir + "/spill");
  ASSERT_TRUE(store.has_value());
  std::string id = "x";
  WriteAt(store->Path(id, 0), "still here");
  std::ifstream reader(store->Path(id, 0));
  ASSERT_TRUE(store->Delete(id, 0));
  std::string text;
  std::getline(reader, text);
  EXPECT_EQ(text, "still here");
  store->RemoveAll();
}

TEST(NodeStore, SweepsPartialFilesOfDeadWritersOnly) {
  std::string dir = TempDir();
  auto store = NodeStore::Open(dir + "/mem", "n", dir + "/spill");
  ASSERT_TRUE(store.has_value());
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  int status = 0;
  waitpid(child, &status, 0);  // reaped: its pid runs nothing now
  std::string mine = store->Path("a", 0) + ".tmp." + std::to_string(getpid());
  std::string dead = store->Path("b", 0) + ".tmp." + std::to_string(child);
  std::string sealed = store->Path("c", 0);
  WriteAt(mine, "writing");
  WriteAt(dead, "abandoned");
  WriteAt(sealed, "done");
  EXPECT_EQ(store->SweepPartial(), 1);
  EXPECT_TRUE(Exists(mine));
  EXPECT_FALSE(Exists(dead));
  EXPECT_TRUE(Exists(sealed));
  EXPECT_EQ(store->SweepPartial(getpid()), 1);
  EXPECT_FALSE(Exists(mine));
  EXPECT_TRUE(Exists(sealed));
  store->RemoveAll();
}

TEST(NodeStore, SpillingMovesAValueToDiskWhereReadsAndDeletesFindIt) {
  std::string dir = TempDir();
  auto store = NodeStore::Open(dir + "/mem", "n", dir + "/spill");
  ASSERT_TRUE(store.has_value());
  WriteAt(store->Path("v", 1), "spill me");
  ASSERT_TRUE(store->Spill("v", 1).ok());
  EXPECT_FALSE(Exists(store->Path("v", 1)));
  EXPECT_TRUE(Exists(store->SpillPath("v", 1)));
  uint64_t size = 0;
  auto data = store->Read("v", 1, 0, 100, &size);
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(*data, "spill me");
  EXPECT_EQ(store->Spill("v", 1).code(), Code::kNotFound);  // not in memory any more
  EXPECT_TRUE(store->Delete("v", 1));
  EXPECT_FALSE(Exists(store->SpillPath("v", 1)));
  store->RemoveAll();
  rmdir(dir.c_str());
}

TEST(NodeStore, ASpillThatCannotBeWrittenLeavesTheValueInMemory) {
  std::string dir = TempDir();
  auto store = NodeStore::Open(dir + "/mem", "n", dir + "/spill");
  ASSERT_TRUE(store.has_value());
  WriteAt(store->Path("v", 0), "stay");
  // Its temporary name on the spill side is taken by a directory: the write fails, as on a full disk.
  ASSERT_EQ(mkdir((store->SpillPath("v", 0) + ".tmp.spill").c_str(), 0700), 0);
  Status s = store->Spill("v", 0);
  EXPECT_EQ(s.code(), Code::kResourceExhausted);
  EXPECT_NE(s.message().find("cannot spill"), std::string::npos) << s.message();
  EXPECT_TRUE(Exists(store->Path("v", 0)));
  EXPECT_FALSE(Exists(store->SpillPath("v", 0)));
  rmdir((store->SpillPath("v", 0) + ".tmp.spill").c_str());
  store->RemoveAll();
  rmdir(dir.c_str());
}

TEST(NodeStore, ListsCompleteValuesInMemoryAndSpilled) {
  std::string dir = TempDir();
  auto store = NodeStore::Open(dir + "/mem", "n", dir + "/spill");
  ASSERT_TRUE(store.has_value());
  WriteAt(store->Path("a", 0), "x");
  WriteAt(store->Path("b", 3), "y");
  ASSERT_TRUE(store->Spill("b", 3).ok());
  WriteAt(store->Path("c", 0) + ".tmp.123", "partial");
  WriteAt(dir + "/mem/not-a-value", "z");
  auto listed = store->List();
  std::sort(listed.begin(), listed.end(), [](const auto& l, const auto& r) { return l.id < r.id; });
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].id, "a");
  EXPECT_EQ(listed[0].attempt, 0u);
  EXPECT_FALSE(listed[0].spilled);
  EXPECT_EQ(listed[1].id, "b");
  EXPECT_EQ(listed[1].attempt, 3u);
  EXPECT_TRUE(listed[1].spilled);
  store->RemoveAll();
  rmdir(dir.c_str());
}

TEST(Crc32, IsZlibs) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);
  EXPECT_EQ(Crc32(""), 0u);
  EXPECT_EQ(Crc32("6789", Crc32("12345")), 0xCBF43926u);  // continues over parts
}

TEST(NodeStore, DefaultCapacityIsAShareOfMemoryBoundedByTheFileSystem) {
  uint64_t cap = NodeStore::DefaultCapacity("/tmp");
  EXPECT_GT(cap, 0u);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  EXPECT_LE(cap, static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 10 * 3);
}

}  // namespace
}  // namespace corral::objects
