#include "corral/cli/daemon.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "corral/base/files.h"
#include "corral/base/log.h"

namespace corral::cli {

std::string SelfExe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "corral";
  return std::string(buf, static_cast<size_t>(n));
}

static bool IsExecutable(const std::string& p) { return access(p.c_str(), X_OK) == 0; }

std::string FindPython(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* e = std::getenv("CORRAL_PYTHON"); e && *e) return e;
  std::string self = SelfExe();
  std::string beside = self.substr(0, self.rfind('/') + 1) + "python3";
  if (IsExecutable(beside)) return beside;
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!dir.empty() && IsExecutable(dir + "/python3")) return dir + "/python3";
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  return "/usr/bin/python3";
}

Status ClaimStateDir(const std::string& dir) {
  if (dir.empty() || dir.front() != '/')
    return MakeStatus(Code::kFailedPrecondition,
                      "the state dir '{}' is not an absolute path: give --state-dir as one (or set HOME or CORRAL_HOME)",
                      dir);
  CORRAL_RETURN_IF_ERROR(MakeDirs(dir));
  // Its keys and tokens are this user's alone: a directory others may enter or that someone else
  // owns (a planted one) is refused, not used.
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return MakeStatus(Code::kFailedPrecondition, "the state dir {} is not a directory (a link?)", dir);
  if (st.st_uid != geteuid())
    return MakeStatus(Code::kFailedPrecondition, "the state dir {} belongs to user {}, not to this user ({}): use "
                      "your own (--state-dir or CORRAL_HOME)", dir, st.st_uid, geteuid());
  if (st.st_mode & 077)
    return MakeStatus(Code::kFailedPrecondition, "the state dir {} may be read by others (mode {:o}); it holds keys "
                      "and tokens: chmod 700 {}", dir, st.st_mode & 0777, dir);
  CORRAL_RETURN_IF_ERROR(MakeDirs(dir + "/logs"));
  std::string lock = dir + "/lock";
  int fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return MakeStatus(Code::kFailedPrecondition, "cannot open {}: {}", lock, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    auto pid = ReadFile(dir + "/pid");
    return MakeStatus(Code::kAlreadyExists,
                      "another corral process (pid {}) uses the state dir {}; stop it with `corral stop` "
                      "or pass a different --state-dir",
                      pid ? *pid : "?", dir);
  }
  // fd stays open (and locked) until the process exits.
  return WriteFile(dir + "/pid", std::to_string(getpid()) + "\n", 0644);
}

void AnnounceReady(const std::string& address) {
  std::printf("%s%s\n", kReadyPrefix, address.c_str());
  std::fflush(stdout);
}

static std::vector<char*> Argv(const std::string& exe, const std::vector<std::string>& args,
                               std::vector<std::string>& storage) {
  storage = {exe};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  return argv;
}

Result<std::string> SpawnDaemon(const std::vector<std::string>& args, const std::string& log_path,
                                double timeout_s) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return Err(Code::kInternal, "pipe failed");
  std::string exe = SelfExe();
  std::vector<std::string> storage;
  auto argv = Argv(exe, args, storage);
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    int e = errno;
    close(out[0]);
    close(out[1]);
    return Err(Code::kFailedPrecondition, fmt::format("cannot open {}: {}", log_path, strerror(e)));
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {out[0], out[1], log_fd}) close(fd);
    return Err(Code::kUnavailable, fmt::format("fork failed: {}", strerror(e)));
  }
  if (pid == 0) {
    setsid();
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(log_fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(log_fd);
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  while (got.find('\n') == std::string::npos) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) break;
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[512];
    ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  if (!got.starts_with(kReadyPrefix)) {
    int status = 0;
    bool exited = waitpid(pid, &status, WNOHANG) == pid;
    std::string tail;
    if (auto log = ReadFile(log_path)) {
      tail = log->size() > 1200 ? log->substr(log->find('\n', log->size() - 1200) + 1) : *log;
    }
    return Err(Code::kUnavailable, fmt::format("the background process {}; the end of {}:\n{}",
                                               exited ? "exited before it was ready" : "did not become ready in time",
                                               log_path, tail));
  }
  std::string addr = got.substr(strlen(kReadyPrefix));
  addr = addr.substr(0, addr.find('\n'));
  return addr;
}

Result<std::string> StartInBackground(const std::vector<std::string>& argv, const std::string& state_dir,
                                      const std::string& log_name, const std::string& what) {
  if (Status s = MakeDirs(state_dir); !s.ok()) {
    std::fprintf(stderr, "corral: %s\n", s.message().c_str());
    return Err(s);
  }
  std::vector<std::string> args = argv;
  args.push_back("--block");
  // Ready includes the node's first worker having imported its --tasks modules: allow for heavy ones.
  auto ready = SpawnDaemon(args, state_dir + "/" + log_name, 60);
  if (!ready) std::fprintf(stderr, "corral: the %s did not start: %s\n", what.c_str(), ready.error().message().c_str());
  return ready;
}

Result<int> SpawnChild(const std::vector<std::string>& args) {
  std::string exe = SelfExe();
  std::vector<std::string> storage;
  auto argv = Argv(exe, args, storage);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Err(Code::kUnavailable, fmt::format("fork failed: {}", strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(2, 1);  // the child's ready line is not needed: keep our stdout for our own
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

void ExitOnStdinEof() {
  std::thread([] {
    char buf[256];
    while (true) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    // The parent is gone: stop like on SIGTERM.
    kill(getpid(), SIGTERM);
  }).detach();
}

void RunEventLoop(boost::asio::io_context& io) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (const std::exception& e) {
      LOG_ERROR("unexpected error in an event handler (a defect; please report it), carrying on: {}",
                Printable(e.what()));
    }
  }
}

}  // namespace corral::cli
