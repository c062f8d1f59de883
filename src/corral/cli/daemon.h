// Process plumbing for the `corral` command: state directories with a lock, pid files, running a
// subcommand in the background and waiting for it to say it is ready, and finding executables.
#pragma once

#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "corral/base/status.h"

namespace corral::cli {

// Path of the running `corral` binary.
std::string SelfExe();
// A Python interpreter for workers: --python, else $CORRAL_PYTHON, else python3 beside this
// binary (a virtual environment's bin/), else python3 on PATH.
std::string FindPython(const std::string& flag);

// Creates `dir` (0700) and takes an exclusive lock on dir/lock for the life of the process, so two
// processes never share a state dir. Writes dir/pid.
Status ClaimStateDir(const std::string& dir);

// The line a foreground process prints on stdout when it is ready: "CORRAL_READY <address>".
inline constexpr const char* kReadyPrefix = "CORRAL_READY ";
void AnnounceReady(const std::string& address);

// Runs `args` (this binary's arguments) detached (new session, output appended to `log_path`),
// waits up to `timeout_s` for its ready line and returns the address it announced.
Result<std::string> SpawnDaemon(const std::vector<std::string>& args, const std::string& log_path,
                                double timeout_s);

// `corral start` without --block: creates `state_dir`, re-runs this command with --block in the
// background (output to state_dir/log_name) and returns what it announced; on failure prints why
// ("corral: the <what> did not start: ...") and returns an error.
Result<std::string> StartInBackground(const std::vector<std::string>& argv, const std::string& state_dir,
                                      const std::string& log_name, const std::string& what);

// Starts `args` as a child that dies with this process; returns its pid.
Result<int> SpawnChild(const std::vector<std::string>& args);

// Exits the process when stdin reaches end-of-file (the parent that holds the pipe died).
void ExitOnStdinEof();

// Runs `io` until it stops. An exception that escapes a handler is a defect: it is logged and the
// loop goes on, so one bad request or message never ends a daemon that serves everyone else.
void RunEventLoop(boost::asio::io_context& io);

}  // namespace corral::cli
