#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "corral/base/files.h"
#include "corral/cli/commands.h"

namespace corral::cli {

namespace {

struct Running {
  std::string dir;
  pid_t pid;
};

bool IsCorral(pid_t pid) {
  auto cmd = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  return cmd && cmd->find("corral") != std::string::npos;
}

void Collect(const std::string& dir, int depth, std::vector<Running>* out) {
  if (auto p = ReadFile(dir + "/pid")) {
    pid_t pid = static_cast<pid_t>(std::atoi(p->c_str()));
    if (pid > 0 && kill(pid, 0) == 0 && IsCorral(pid)) out->push_back({dir, pid});
  }
  if (depth == 0) return;
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == ".." || name == "logs" || e->d_type != DT_DIR) continue;
    Collect(dir + "/" + name, depth - 1, out);
  }
  closedir(d);
}

}  // namespace

int Stop(double timeout_s, const std::string& state_dir) {
  std::vector<Running> procs;
  Collect(state_dir.empty() ? CorralHome() : state_dir, state_dir.empty() ? 2 : 1, &procs);
  if (procs.empty()) {
    if (state_dir.empty())
      std::printf("Nothing to stop: no corral head or agent started by `corral start` runs under %s (one started "
                  "with --state-dir elsewhere: `corral stop --state-dir DIR`).\n",
                  CorralHome().c_str());
    else
      std::printf("Nothing to stop: no corral head or agent runs with state dir %s.\n", state_dir.c_str());
    return 0;
  }
  for (const auto& p : procs) {
    std::printf("Stopping pid %d (%s)\n", p.pid, p.dir.c_str());
    std::fflush(stdout);
    kill(p.pid, SIGTERM);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  for (const auto& p : procs) {
    auto next_note = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (kill(p.pid, 0) == 0 && IsCorral(p.pid) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (std::chrono::steady_clock::now() >= next_note) {
        std::printf("  still waiting for pid %d: an agent lets its running tasks finish (up to its "
                    "--drain-timeout) and hands the rest back first\n",
                    p.pid);
        std::fflush(stdout);
        next_note += std::chrono::seconds(5);
      }
    }
    if (kill(p.pid, 0) == 0 && IsCorral(p.pid)) {
      std::printf("pid %d did not stop within %.0fs: killing it\n", p.pid, timeout_s);
      kill(p.pid, SIGKILL);
    }
  }
  std::printf("Stopped.\n");
  return 0;
}

}  // namespace corral::cli
