// IoGuard: posts work to the io thread that runs only while its owner is alive. Objects whose
// store work finishes on the committer's thread hand the result back through Post; a result that
// arrives after the owner was destroyed is dropped. Destroy it (or its owner) on the io thread.
#pragma once

#include <memory>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace corral::head {

class IoGuard {
 public:
  explicit IoGuard(boost::asio::io_context& io) : io_(io) {}
  ~IoGuard() { *alive_ = false; }
  IoGuard(const IoGuard&) = delete;
  IoGuard& operator=(const IoGuard&) = delete;

  // Runs f on the io thread later, unless the guard is gone by then. Any thread.
  template <typename F>
  void Post(F&& f) {
    boost::asio::post(io_, [alive = alive_, f = std::forward<F>(f)]() mutable {
      if (*alive) f();
    });
  }
  // A flag that turns false when the guard goes (for handlers posted by other means: timers).
  std::shared_ptr<bool> alive() const { return alive_; }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context& io_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace corral::head
