#include "corral/net/connection.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "corral/base/log.h"

namespace corral::net {

NetCounters& GlobalNetCounters() {
  static NetCounters counters;
  return counters;
}

std::shared_ptr<Connection> Connection::Create(std::unique_ptr<ByteStream> stream,
                                               ConnectionOptions options) {
  return std::shared_ptr<Connection>(new Connection(std::move(stream), options));
}

Connection::Connection(std::unique_ptr<ByteStream> stream, ConnectionOptions options)
    : stream_(std::move(stream)),
      options_(options),
      peer_(stream_->peer()),
      executor_(stream_->executor()),
      handshake_timer_(executor_),
      cork_timer_(executor_),
      late_timer_(executor_),
      decoder_(options.max_handshake_frame_bytes ? options.max_handshake_frame_bytes : options.max_frame_bytes) {
  GlobalNetCounters().connections_opened.fetch_add(1, std::memory_order_relaxed);
  if (options_.owner_reads) {  // (TLS reads on the io thread)
    auto unwatched = stream_->OutOfReactor();
    if (unwatched) stream_ = std::move(unwatched);
    else options_.owner_reads = false;
  }
}

Connection::~Connection() = default;

void Connection::Start(MessageHandler on_message, CloseHandler on_close) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  if (options_.handshake_timeout.count() > 0) {
    handshake_timer_.expires_after(options_.handshake_timeout);
    std::weak_ptr<Connection> weak = shared_from_this();
    auto timeout = options_.handshake_timeout;
    handshake_timer_.async_wait([weak, timeout](const ErrorCode& ec) {
      if (ec) return;
      if (auto self = weak.lock())
        self->CloseOnIo(MakeStatus(Code::kDeadlineExceeded, "no handshake within {} ms", timeout.count()));
    });
  }
  if (!options_.owner_reads) StartRead();
}

void Connection::MarkHandshakeDone() {
  handshake_timer_.cancel();
  decoder_.set_max_payload(options_.max_frame_bytes);
}

void Connection::StartRead() {
  if (reading_ || paused_ || closed_ || options_.owner_reads) return;
  PrepareReadBuffer();
  reading_ = true;
  stream_->AsyncReadSome(asio::buffer(read_buf_.data() + read_end_, read_buf_.size() - read_end_),
                         [self = shared_from_this()](const ErrorCode& ec, size_t n) { self->OnRead(ec, n); });
}

void Connection::PrepareReadBuffer() {
  // Compact, then make room for 64 KiB more, or, inside a large frame, for as much again as has
  // arrived (up to the rest of the frame): memory follows the bytes received, not a header's claim.
  if (read_begin_ > 0) {
    read_buf_.erase(0, read_begin_);
    read_end_ -= read_begin_;
    read_begin_ = 0;
  }
  if (read_end_ == 0 && read_buf_.size() > (1u << 20)) std::string().swap(read_buf_);  // a large frame is done
  size_t want = read_end_ + (64u << 10);
  size_t frame = decoder_.pending_frame_bytes();
  if (frame > want) want = std::min(frame, std::max(want, 2 * read_end_));
  if (read_buf_.size() < want) read_buf_.resize(want);
}

void Connection::OnRead(const ErrorCode& ec, size_t n) {
  reading_ = false;
  if (closed_) return;
  if (ec) {
    if (ec == asio::error::eof || ec == asio::error::connection_reset)
      CloseOnIo(Status(Code::kUnavailable, "peer closed the connection"));
    else
      CloseOnIo(Status(Code::kUnavailable, "read failed: " + ec.message()));
    return;
  }
  Status error;
  if (!Consume(n, &error)) {
    CloseOnIo(error);
    return;
  }
  StartRead();
}

bool Connection::Consume(size_t n, Status* error) {
  auto& counters = GlobalNetCounters();
  counters.bytes_received.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  read_end_ += n;
  uint64_t frames_before = decoder_.frames(), messages_before = decoder_.messages();
  auto used = decoder_.Decode(std::string_view(read_buf_.data() + read_begin_, read_end_ - read_begin_),
                              [this](std::string_view m) {
                                if (!closed_) on_message_(m);
                              });
  counters.frames_received.fetch_add(static_cast<int64_t>(decoder_.frames() - frames_before),
                                     std::memory_order_relaxed);
  counters.messages_received.fetch_add(static_cast<int64_t>(decoder_.messages() - messages_before),
                                       std::memory_order_relaxed);
  if (!used) {
    *error = used.error();
    return false;
  }
  read_begin_ += *used;
  if (read_begin_ == read_end_) read_begin_ = read_end_ = 0;
  return true;
}

bool Connection::ReadAvailable() {
  std::lock_guard lock(read_mu_);
  Status error;
  while (!closed_) {
    PrepareReadBuffer();
    size_t room = read_buf_.size() - read_end_;
    ssize_t n = ::recv(stream_->plain_fd(), read_buf_.data() + read_end_, room, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) {
      error = n == 0 ? Status(Code::kUnavailable, "peer closed the connection")
                     : Status(Code::kUnavailable, std::string("read failed: ") + strerror(errno));
      break;
    }
    if (!Consume(static_cast<size_t>(n), &error)) break;
    if (static_cast<size_t>(n) < room) return !closed_;  // the socket is drained: no second recv to learn it
  }
  if (!error.ok()) asio::post(executor_, [self = shared_from_this(), error] { self->CloseOnIo(error); });
  return false;
}

bool Connection::WithReadFd(const std::function<void(int fd)>& f) {
  std::lock_guard lock(read_mu_);
  if (closed_) return false;
  f(stream_->plain_fd());
  return true;
}

bool Connection::Send(const google::protobuf::MessageLite& message, Urgency urgency) {
  if (closed_) return false;
  size_t n = message.ByteSizeLong();
  if (n + 4 > options_.max_frame_bytes) {
    LOG_WARN("message of {} bytes to {} exceeds the {}-byte frame limit; not sent", n, peer_,
             options_.max_frame_bytes);
    return false;
  }
  bool post = false, cork = false, late = false;
  {
    std::lock_guard lock(mu_);
    if (close_after_flush_ || closed_) return false;
    if (options_.max_queued_bytes && queued_bytes_ + n + 4 > options_.max_queued_bytes) {
      Status why = MakeStatus(Code::kResourceExhausted,
                              "the peer does not read: {} bytes are queued for it and a message of {} more would pass "
                              "the {}-byte limit", queued_bytes_, n, options_.max_queued_bytes);
      LOG_WARN("closing the connection to {}: {}", peer_, why.message());
      asio::post(executor_, [self = shared_from_this(), why] { self->CloseOnIo(why); });
      return false;
    }
    if (!pending_.empty() && pending_.size() + n + 4 > options_.max_frame_bytes)
      full_.push_back(pending_.Take());
    auto now = std::chrono::steady_clock::now();
    if (pending_.empty()) pending_since_ = now;
    size_t before = pending_.size();
    char* dst = pending_.AppendMessage(n);
    message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(dst));
    queued_bytes_ += pending_.size() - before;
    if (queued_bytes_ >= options_.high_watermark_bytes) was_full_ = true;
    if (write_scheduled_) return true;  // the write in flight picks it up next
    bool room = pending_.message_count() < options_.cork_max_messages;
    bool hold = urgency == Urgency::kLate && room && full_.empty() && now - pending_since_ < options_.late_delay;
    bool flowing = now - last_send_ < options_.cork_delay;
    if (!hold) last_send_ = now;
    if (hold) {
      late = !late_armed_;
      late_armed_ = true;
    } else if (urgency == Urgency::kSoon && flowing && room) {
      if (!cork_armed_) cork = cork_armed_ = true;
    } else if (options_.direct_writes && full_.empty()) {
      WriteDirect();
    } else {
      write_scheduled_ = post = true;
    }
  }
  if (post) asio::post(executor_, [self = shared_from_this()] { self->StartWrite(); });
  if (cork) ArmTimer(&Connection::cork_timer_, options_.cork_delay, &Connection::cork_armed_);
  // (Later than late_delay: a sender that goes on sending takes them before, from its own thread.)
  if (late) ArmTimer(&Connection::late_timer_, 4 * options_.late_delay, &Connection::late_armed_);
  return true;
}

void Connection::ArmTimer(asio::steady_timer Connection::*timer, std::chrono::microseconds delay,
                          bool Connection::*armed) {
  asio::post(executor_, [self = shared_from_this(), timer, delay, armed] {
    ((*self).*timer).expires_after(delay);
    ((*self).*timer).async_wait([self, armed](const ErrorCode& ec) {
      if (ec) return;
      bool start = false;
      {
        std::lock_guard lock(self->mu_);
        (*self).*armed = false;
        if (!self->write_scheduled_ && !self->pending_.empty()) start = self->write_scheduled_ = true;
      }
      if (start) self->StartWrite();
    });
  });
}

void Connection::Flush() {
  if (closed_) return;
  bool post = false;
  {
    std::lock_guard lock(mu_);
    if (write_scheduled_ || pending_.empty() || closed_) return;
    if (options_.direct_writes && full_.empty())
      WriteDirect();
    else
      write_scheduled_ = post = true;
  }
  if (post) asio::post(executor_, [self = shared_from_this()] { self->StartWrite(); });
}

std::string Connection::TakeUnsent() {
  std::lock_guard lock(mu_);
  return std::exchange(unsent_, {});
}

void Connection::WriteDirect() {
  uint64_t messages = pending_.message_count();
  std::string frame = pending_.Take();
  ssize_t wrote = stream_->TryWriteNow(frame.data(), frame.size());
  if (wrote < 0) wrote = 0;
  auto& counters = GlobalNetCounters();
  counters.frames_sent.fetch_add(1, std::memory_order_relaxed);
  counters.messages_sent.fetch_add(static_cast<int64_t>(messages), std::memory_order_relaxed);
  counters.bytes_sent.fetch_add(wrote, std::memory_order_relaxed);
  queued_bytes_ -= std::min(queued_bytes_, static_cast<size_t>(wrote));
  if (static_cast<size_t>(wrote) == frame.size()) return;
  // The rest goes out asynchronously, before anything queued later.
  full_.push_front(frame.substr(static_cast<size_t>(wrote)));
  full_front_partial_ = true;
  write_scheduled_ = true;
  asio::post(executor_, [self = shared_from_this()] { self->StartWrite(); });
}

void Connection::SetMaxQueuedBytes(size_t bytes) {
  std::lock_guard lock(mu_);
  options_.max_queued_bytes = bytes;
}

bool Connection::has_room() const {
  std::lock_guard lock(mu_);
  return queued_bytes_ < options_.high_watermark_bytes;
}

bool Connection::WaitForRoom(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  return room_cv_.wait_until(lock, deadline, [&] {
    return closed_.load() || queued_bytes_ < options_.high_watermark_bytes;
  }) && !closed_;
}

void Connection::StartWrite() {
  if (closed_) return;
  uint64_t messages = 0;
  {
    std::lock_guard lock(mu_);
    if (!full_.empty()) {
      writing_ = std::move(full_.front());
      full_.pop_front();
      full_front_partial_ = false;
      messages = 1;  // counted approximately for overflow frames
    } else if (!pending_.empty()) {
      messages = pending_.message_count();
      writing_ = pending_.Take();
    } else {
      write_scheduled_ = false;
      if (close_after_flush_) {
        asio::post(executor_, [self = shared_from_this(), r = flush_reason_] { self->CloseOnIo(r); });
      }
      return;
    }
  }
  auto& counters = GlobalNetCounters();
  counters.frames_sent.fetch_add(1, std::memory_order_relaxed);
  counters.messages_sent.fetch_add(static_cast<int64_t>(messages), std::memory_order_relaxed);
  stream_->AsyncWrite(asio::buffer(writing_),
                      [self = shared_from_this()](const ErrorCode& ec, size_t n) { self->OnWrite(ec, n); });
}

void Connection::OnWrite(const ErrorCode& ec, size_t n) {
  if (ec) {
    CloseOnIo(Status(Code::kUnavailable, "write failed: " + ec.message()));
    return;
  }
  GlobalNetCounters().bytes_sent.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  bool drained = false;
  {
    std::lock_guard lock(mu_);
    queued_bytes_ -= std::min(queued_bytes_, writing_.size());
    if (was_full_ && queued_bytes_ < options_.high_watermark_bytes) {
      was_full_ = false;
      drained = true;
    }
  }
  writing_.clear();
  if (drained) {
    room_cv_.notify_all();
    if (on_drain_) on_drain_();
  }
  StartWrite();
}

void Connection::Close(const Status& reason) {
  if (closed_) return;
  asio::post(executor_, [self = shared_from_this(), reason] { self->CloseOnIo(reason); });
}

void Connection::CloseAfterFlush(const Status& reason) {
  bool post = false;
  {
    std::lock_guard lock(mu_);
    close_after_flush_ = true;
    flush_reason_ = reason;
    if (!write_scheduled_) {
      write_scheduled_ = true;
      post = true;
    }
  }
  if (post) asio::post(executor_, [self = shared_from_this()] { self->StartWrite(); });
}

int Connection::CloseAndTakeFd(const Status& reason) {
  int fd = -1;
  if (!closed_) {
    std::unique_lock read_lock(read_mu_, std::defer_lock);
    if (options_.owner_reads) read_lock.lock();
    std::lock_guard lock(mu_);
    fd = stream_->Release();
  }
  CloseOnIo(reason);
  return fd;
}

void Connection::CloseOnIo(const Status& reason) {
  if (closed_.exchange(true)) return;
  if (!reason.ok() && reason.code() != Code::kUnavailable)
    GlobalNetCounters().connections_closed_with_error.fetch_add(1, std::memory_order_relaxed);
  handshake_timer_.cancel();
  {
    // Under mu_: a direct write (which holds mu_ and checks closed_) is not in progress and cannot
    // start on this descriptor, which the system may hand to a new connection once closed; under
    // read_mu_, likewise for an owner's read.
    std::unique_lock read_lock(read_mu_, std::defer_lock);
    if (options_.owner_reads) read_lock.lock();
    std::lock_guard lock(mu_);
    stream_->Close();
    std::string last = pending_.Take();
    if (options_.keep_unsent) {
      for (size_t i = full_front_partial_ ? 1 : 0; i < full_.size(); ++i) unsent_ += full_[i];
      unsent_ += last;
    }
    full_.clear();
    queued_bytes_ = 0;
  }
  room_cv_.notify_all();
  if (on_close_) {
    auto handler = std::move(on_close_);
    on_close_ = nullptr;
    handler(reason);
  }
  // Handlers may hold their owners alive; drop them, but not from inside a running handler.
  asio::post(executor_, [self = shared_from_this()] {
    std::unique_lock read_lock(self->read_mu_, std::defer_lock);
    if (self->options_.owner_reads) read_lock.lock();  // (an owner's read may be handing out a message)
    self->on_message_ = nullptr;
    self->on_drain_ = nullptr;
  });
}

void Connection::PauseReading() { paused_ = true; }

void Connection::ResumeReading() {
  if (!paused_) return;
  paused_ = false;
  StartRead();
}

}  // namespace corral::net
