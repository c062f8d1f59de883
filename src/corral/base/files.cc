#include "corral/base/files.h"

#include "corral/base/ids.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace corral {

std::string CorralHome() {
  if (const char* h = std::getenv("CORRAL_HOME"); h && *h) return h;
  const char* home = std::getenv("HOME");
  if (home && *home) return std::string(home) + "/.corral";
  // Not /tmp: anyone could have made ~/.corral there first. The account's own home, else nothing
  // (ClaimStateDir then refuses the relative path with a message).
  if (const passwd* pw = getpwuid(getuid()); pw && pw->pw_dir && *pw->pw_dir) return std::string(pw->pw_dir) + "/.corral";
  return ".corral";
}

std::string DefaultHeadStateDir() { return CorralHome() + "/head"; }

Status MakeDirs(const std::string& path, int mode) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      cur = path.substr(0, i);
      if (mkdir(cur.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST)
        return MakeStatus(Code::kFailedPrecondition, "cannot create directory {}: {}", cur,
                          strerror(errno));
    }
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Err(Code::kNotFound, fmt::format("cannot read {}: {}", path, strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status WriteFile(const std::string& path, const std::string& data, int mode) {
  // A fresh temporary name, created exclusively and never through a link: a file or link planted
  // beside `path` cannot receive (or redirect) what is written.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    tmp = fmt::format("{}.{}.tmp", path, Hex(RandomBytes(6)));
    fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return MakeStatus(Code::kFailedPrecondition, "cannot write {}: {}", tmp, strerror(errno));
  fchmod(fd, static_cast<mode_t>(mode));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      unlink(tmp.c_str());
      return MakeStatus(Code::kFailedPrecondition, "cannot write {}: {}", tmp, strerror(e));
    }
    off += static_cast<size_t>(n);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return MakeStatus(Code::kFailedPrecondition, "cannot rename {}: {}", tmp, strerror(e));
  }
  return Status::Ok();
}

std::string FindToken() {
  if (const char* t = std::getenv("CORRAL_TOKEN"); t && *t) return t;
  std::string file;
  if (const char* f = std::getenv("CORRAL_TOKEN_FILE"); f && *f)
    file = f;
  else
    file = DefaultHeadStateDir() + "/token";
  auto data = ReadFile(file);
  if (!data) return "";
  std::string tok = *data;
  while (!tok.empty() && (tok.back() == '\n' || tok.back() == ' ')) tok.pop_back();
  return tok;
}

void RaiseOpenFilesLimit() {
  constexpr rlim_t kMost = 1 << 20;
  rlimit l{};
  if (getrlimit(RLIMIT_NOFILE, &l) != 0) return;
  rlim_t want = l.rlim_max == RLIM_INFINITY ? kMost : std::min(l.rlim_max, kMost);
  if (l.rlim_cur != RLIM_INFINITY && l.rlim_cur < want) {
    rlimit raised{want, l.rlim_max};
    setrlimit(RLIMIT_NOFILE, &raised);  // (as before if refused)
  }
}

}  // namespace corral
