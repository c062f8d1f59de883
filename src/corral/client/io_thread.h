// IoThread: an io_context with one thread running it, for processes whose main thread belongs to
// someone else (a Python driver or worker). Survives fork(): in a child the thread does not exist,
// so the destructor leaks instead of joining (the child starts a fresh one).
#pragma once

#include <sys/types.h>

#include <thread>

#include <boost/asio.hpp>

namespace corral::client {

class IoThread {
 public:
  IoThread();
  ~IoThread();
  boost::asio::io_context& io() { return *io_; }
  // Stops and joins the thread; the io_context lives until destruction.
  void Stop();
  bool in_forked_child() const;

 private:
  boost::asio::io_context* io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type>* guard_;
  std::thread thread_;
  pid_t pid_;
  bool stopped_ = false;
};

}  // namespace corral::client
