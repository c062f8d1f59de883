#include "corral/agent/worker_processes.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "corral/base/log.h"

extern char** environ;

namespace corral::agent {

namespace asio = boost::asio;

struct WorkerProcesses::Proc {
  pid_t pid = -1;
  std::unique_ptr<asio::posix::stream_descriptor> out, err;
  std::string out_buf, err_buf;
  char read_buf[8192];
  char read_buf_err[8192];
  FILE* log = nullptr;
  ~Proc() {
    if (log) std::fclose(log);
  }
};

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return fmt::format("killed by signal {} (SIG{})", sig, abbrev ? abbrev : "?");
  }
  return fmt::format("ended with wait status {}", status);
}

WorkerProcesses::WorkerProcesses(asio::io_context& io, LineHandler on_line, ExitHandler on_exit)
    : io_(io), on_line_(std::move(on_line)), on_exit_(std::move(on_exit)), sigchld_(io, SIGCHLD) {
  WaitSignal();
}

WorkerProcesses::~WorkerProcesses() {
  *alive_ = false;
  KillAll(SIGKILL);
}

Result<pid_t> WorkerProcesses::Spawn(const SpawnSpec& spec) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return Err(Code::kUnavailable, fmt::format("pipe: {}", strerror(errno)));
  if (pipe2(err, O_CLOEXEC) != 0) {
    int e = errno;
    close(out[0]);
    close(out[1]);
    return Err(Code::kUnavailable, fmt::format("pipe: {}", strerror(e)));
  }
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& k : spec.unset_env) env.erase(k);
  for (const auto& [k, v] : spec.env) env[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_strings{spec.python};
  arg_strings.insert(arg_strings.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& s : arg_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
    return Err(Code::kUnavailable, fmt::format("fork: {}", strerror(e)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the agent died before prctl took effect
    setpgid(0, 0);
    // (An agent started with a standard descriptor closed may have been given one of 0-2 for it.)
    int pass_fd = spec.pass_fd >= 0 && spec.pass_fd <= 2 ? fcntl(spec.pass_fd, F_DUPFD, 3) : spec.pass_fd;
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (pass_fd == 3) fcntl(3, F_SETFD, 0);  // (kept across exec)
    else if (pass_fd >= 0) dup2(pass_fd, 3);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    close_range(pass_fd >= 0 ? 4 : 3, ~0U, 0);
    execve(argv[0], argv.data(), envp.data());
    const char msg[] = "corral agent: cannot exec the worker's Python interpreter\n";
    [[maybe_unused]] ssize_t n = write(2, msg, sizeof msg - 1);  // nothing to do if even this fails
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  auto proc = std::make_shared<Proc>();
  proc->pid = pid;
  proc->out = std::make_unique<asio::posix::stream_descriptor>(io_, out[0]);
  proc->err = std::make_unique<asio::posix::stream_descriptor>(io_, err[0]);
  if (!spec.log_path.empty()) {
    proc->log = std::fopen(spec.log_path.c_str(), "a");
    if (proc->log) std::setvbuf(proc->log, nullptr, _IOLBF, 0);
  }
  procs_[pid] = proc;
  ReadPipe(proc, false);
  ReadPipe(proc, true);
  return pid;
}

void WorkerProcesses::ReadPipe(const std::shared_ptr<Proc>& proc, bool is_stderr) {
  auto& stream = is_stderr ? proc->err : proc->out;
  char* buf = is_stderr ? proc->read_buf_err : proc->read_buf;
  stream->async_read_some(
      asio::buffer(buf, sizeof proc->read_buf),
      [this, proc, is_stderr, buf, alive = alive_](const boost::system::error_code& ec, size_t n) {
        if (!*alive) return;
        std::string& pending = is_stderr ? proc->err_buf : proc->out_buf;
        // Each line goes to the log file, then to the handler with where it was written.
        auto emit = [&](std::string line) {
          int64_t at = -1;
          if (proc->log) {
            at = std::ftell(proc->log);
            std::fwrite(line.data(), 1, line.size(), proc->log);
            std::fputc('\n', proc->log);
          }
          on_line_(proc->pid, is_stderr, std::move(line), at);
        };
        if (ec) {
          if (!pending.empty()) {
            emit(std::move(pending));
            pending.clear();
          }
          return;
        }
        pending.append(buf, n);
        size_t start = 0;
        for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
          emit(pending.substr(start, nl - start));
        pending.erase(0, start);
        if (pending.size() > 65536) {  // a very long line without a newline: pass it on in pieces
          emit(std::move(pending));
          pending.clear();
        }
        ReadPipe(proc, is_stderr);
      });
}

void WorkerProcesses::KillGroup(pid_t pid, int signal) {
  if (procs_.contains(pid)) ::kill(-pid, signal);
}

void WorkerProcesses::Interrupt(pid_t pid, uint32_t task_seq, int signal) {
  if (!procs_.contains(pid)) return;
  sigval value{};
  value.sival_int = static_cast<int>(task_seq);
  ::sigqueue(pid, signal, value);
}

void WorkerProcesses::KillAll(int signal) {
  for (auto& [pid, proc] : procs_) ::kill(-pid, signal);  // each worker with what its tasks started
}

void WorkerProcesses::WaitSignal() {
  sigchld_.async_wait([this, alive = alive_](const boost::system::error_code& ec, int) {
    if (ec || !*alive) return;
    Reap();
    WaitSignal();
  });
}

void WorkerProcesses::Reap() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = procs_.find(pid);
    if (it == procs_.end()) continue;
    procs_.erase(it);
    on_exit_(pid, DescribeWaitStatus(status));
  }
}

}  // namespace corral::agent
