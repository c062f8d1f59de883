#include "corral/client/io_thread.h"

#include <unistd.h>

namespace corral::client {

IoThread::IoThread()
    : io_(new boost::asio::io_context(1)),
      guard_(new boost::asio::executor_work_guard<boost::asio::io_context::executor_type>(io_->get_executor())),
      pid_(getpid()) {
  thread_ = std::thread([io = io_] { io->run(); });
}

bool IoThread::in_forked_child() const { return getpid() != pid_; }

void IoThread::Stop() {
  if (stopped_ || in_forked_child()) return;
  stopped_ = true;
  guard_->reset();
  io_->stop();
  if (thread_.joinable()) thread_.join();
}

IoThread::~IoThread() {
  if (in_forked_child()) {
    // The thread lives only in the parent; its objects may be mid-operation. Leak them.
    thread_.detach();
    return;
  }
  Stop();
  delete guard_;
  delete io_;
}

}  // namespace corral::client
