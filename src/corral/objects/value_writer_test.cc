#include "corral/objects/value_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace corral::objects {
namespace {

class ValueWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/dev/shm/corral-value-writer-XXXXXX";
    fd_ = mkstemp(tmpl);
    ASSERT_GE(fd_, 0);
    path_ = tmpl;
  }
  void TearDown() override {
    close(fd_);
    unlink(path_.c_str());
  }
  std::string Contents() {
    struct stat st{};
    fstat(fd_, &st);
    std::string out(static_cast<size_t>(st.st_size), '\0');
    EXPECT_EQ(pread(fd_, out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
    return out;
  }
  int fd_ = -1;
  std::string path_;
};

// Parts of uneven sizes (some empty), so part and slice boundaries fall everywhere.
std::vector<std::string> MakeParts(size_t count, size_t unit) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < count; ++i) {
    std::string p((i % 7 == 3) ? 0 : unit + i * 13, '\0');
    for (size_t j = 0; j < p.size(); ++j) p[j] = static_cast<char>((i * 31 + j * 7) & 0xff);
    parts.push_back(std::move(p));
  }
  return parts;
}

std::vector<std::string_view> Views(const std::vector<std::string>& parts) {
  return {parts.begin(), parts.end()};
}

std::string Joined(const std::vector<std::string>& parts) {
  std::string all;
  for (const auto& p : parts) all += p;
  return all;
}

TEST_F(ValueWriterTest, WritesManyPartsIntoANewFile) {
  auto parts = MakeParts(1500, 100);  // more than one writev's worth of parts
  ASSERT_TRUE(WriteValue(fd_, Views(parts), false).ok());
  EXPECT_EQ(Contents(), Joined(parts));
}

TEST_F(ValueWriterTest, CopiesALargeValueOverExistingPages) {
  auto parts = MakeParts(9, 5 * (1u << 20) + 17);  // ~45 MiB: copied by several threads where there are cores
  std::string all = Joined(parts);
  ASSERT_GE(all.size(), kParallelCopyBytes);
  ASSERT_EQ(ftruncate(fd_, static_cast<off_t>(all.size())), 0);
  std::string old(all.size(), 'x');
  ASSERT_EQ(pwrite(fd_, old.data(), old.size(), 0), static_cast<ssize_t>(old.size()));
  ASSERT_TRUE(WriteValue(fd_, Views(parts), true).ok());
  EXPECT_TRUE(Contents() == all);  // (not EXPECT_EQ: 45 MiB in a failure message)
}

TEST_F(ValueWriterTest, CopiesEveryByteWhateverTheSizeSplitsInto) {
  // Sizes whose share per thread is a whole number of pages with a few bytes left over.
  for (uint64_t size : {kParallelCopyBytes + 1, 2 * kParallelCopyBytes + 3, 3 * kParallelCopyBytes + 2}) {
    std::string value(size, '\0');
    for (uint64_t i = 0; i < size; ++i) value[i] = static_cast<char>((i * 131) & 0xff);
    std::string old(size, 'x');
    ASSERT_EQ(ftruncate(fd_, 0), 0);
    ASSERT_EQ(pwrite(fd_, old.data(), old.size(), 0), static_cast<ssize_t>(old.size()));
    ASSERT_TRUE(WriteValue(fd_, {std::string_view(value)}, true).ok());
    EXPECT_TRUE(Contents() == value) << "size " << size;
  }
}

TEST_F(ValueWriterTest, CopiesASmallValueOverExistingPages) {
  auto parts = MakeParts(5, 3000);
  std::string all = Joined(parts);
  ASSERT_EQ(ftruncate(fd_, static_cast<off_t>(all.size())), 0);
  ASSERT_TRUE(WriteValue(fd_, Views(parts), true).ok());
  EXPECT_EQ(Contents(), all);
}

TEST_F(ValueWriterTest, AnEmptyValueWritesNothing) {
  ASSERT_TRUE(WriteValue(fd_, {}, true).ok());
  EXPECT_EQ(Contents(), "");
}

}  // namespace
}  // namespace corral::objects
