// Connection: a persistent, framed, message-oriented link over a ByteStream.
//
// Reading: frames are decoded and each message is handed to the MessageHandler, in order, on the
// io thread. The read buffer grows with the bytes that actually arrived (doubling), never to the
// size a frame header merely announces. PauseReading()/ResumeReading() give backpressure: a peer we stop reading from fills
// its socket buffers and then its own bounded send queue, so it slows down instead of growing our
// memory.
// Writing: Send() may be called from any thread. Messages queued while a write is in flight are
// coalesced into the next frame, so one write carries many messages under load and a lone message
// goes out at once when idle. The outbound queue is bounded: senders on other threads can wait for
// room with WaitForRoom(); io-thread senders check has_room(); past max_queued_bytes the
// connection is closed, so a peer that does not read can never grow this process without limit.
// Closing: Close() from any thread; the CloseHandler runs once, on the io thread, with the reason.
// The socket is closed under the same lock as direct writes, so a write from another thread never
// lands on a closed (or reused) descriptor.
// A handshake deadline closes a connection whose peer never completes the handshake.
//
// Ownership: held by shared_ptr; the pending I/O keeps it alive until it is closed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <google/protobuf/message_lite.h>

#include "corral/net/frame.h"
#include "corral/net/stream.h"

namespace corral::net {

// Process-wide transport counters, summed over every connection. Read with relaxed loads.
struct NetCounters {
  std::atomic<int64_t> frames_sent{0}, messages_sent{0}, bytes_sent{0};
  std::atomic<int64_t> frames_received{0}, messages_received{0}, bytes_received{0};
  std::atomic<int64_t> connections_opened{0}, connections_closed_with_error{0};
};
NetCounters& GlobalNetCounters();

struct ConnectionOptions {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // The frame limit until MarkHandshakeDone(): a peer that has not authenticated cannot make us
  // hold more than this for it. 0: max_frame_bytes from the start.
  size_t max_handshake_frame_bytes = 0;
  // Send queue limit: above it has_room() is false and WaitForRoom() blocks.
  size_t high_watermark_bytes = 32u << 20;
  // Hard limit: a Send that would queue more than this closes the connection (the peer does not
  // read what it asks for). 0: none. Must leave room for one whole frame above the watermark.
  size_t max_queued_bytes = 0;
  // 0 disables the deadline; otherwise Close() unless MarkHandshakeDone() comes in time.
  std::chrono::milliseconds handshake_timeout{10000};
  // Send() from a thread other than the io thread writes straight to the socket when nothing is
  // queued, saving a thread wake-up per message (clients: drivers and workers). Under load it
  // falls back to queueing and coalescing.
  bool direct_writes = false;
  // Messages sent with Urgency::kSoon while messages are flowing (the last one left less than
  // `cork_delay` ago) wait up to `cork_delay` (or until `cork_max_messages` are queued, or Flush())
  // so a burst leaves in few frames; a lone message goes at once.
  std::chrono::microseconds cork_delay{100};
  size_t cork_max_messages = 128;
  // Messages sent with Urgency::kLate wait until another message is sent, Flush(), or
  // `cork_max_messages` are queued; the first one sent `late_delay` after the oldest held one
  // takes them all, and the io thread sends them 4 × `late_delay` after at the latest: for what the
  // peer needs soon, but not now.
  std::chrono::microseconds late_delay{2000};
  // On close, keep the whole frames never handed to the socket, for TakeUnsent().
  bool keep_unsent = false;
  // Reads are the owner's (a TCP or Unix stream; ignored for TLS, see owner_reads()): Start() reads
  // nothing, and whichever thread the owner lets read calls ReadAvailable(), one at a time, when
  // the socket has bytes. A thread waiting for a reply reads it itself, with no hand-off from the
  // io thread (client/read_watcher.h).
  bool owner_reads = false;
};

// kNow: written at once. kSoon: corked while messages flow (ConnectionOptions::cork_delay).
// kLate: held (ConnectionOptions::late_delay), and sent with whatever leaves before then.
enum class Urgency { kNow, kSoon, kLate };

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using MessageHandler = std::function<void(std::string_view message)>;
  using CloseHandler = std::function<void(const Status& reason)>;

  static std::shared_ptr<Connection> Create(std::unique_ptr<ByteStream> stream,
                                            ConnectionOptions options = {});
  ~Connection();

  // io thread. Starts reading; handlers run on the io thread.
  void Start(MessageHandler on_message, CloseHandler on_close);
  // Thread-safe. Returns false if the connection is closed or the message is over the frame limit.
  bool Send(const google::protobuf::MessageLite& message, Urgency urgency = Urgency::kNow);
  // Thread-safe. Sends whatever kSoon and kLate messages are waiting.
  void Flush();
  // With ConnectionOptions::keep_unsent, once closed: the frames it never began to write (whole
  // frames, each holding one or more messages), for the owner to send again elsewhere; once.
  std::string TakeUnsent();
  // Thread-safe. Waits until the send queue is below the high watermark, the connection closes, or
  // the deadline passes. Returns false if closed or timed out.
  bool WaitForRoom(std::chrono::steady_clock::time_point deadline);
  bool has_room() const;
  void SetMaxQueuedBytes(size_t bytes);  // thread-safe; see ConnectionOptions::max_queued_bytes

  // Thread-safe, idempotent. Pending output is dropped.
  void Close(const Status& reason);
  // Thread-safe. Stops reading, sends what is queued, then closes with `reason`.
  void CloseAfterFlush(const Status& reason);
  // Io thread: closes this connection as Close() does but hands its socket to the caller, open,
  // instead of shutting it (for another process to use, see net/fd_passing.h). What was queued to
  // send is dropped. -1 (and closed all the same) for TLS or a connection already closed.
  int CloseAndTakeFd(const Status& reason);
  bool closed() const { return closed_.load(); }

  // With owner_reads (false on a TLS stream, which reads on the io thread as usual).
  bool owner_reads() const { return options_.owner_reads; }
  // owner_reads, one thread at a time: reads what the socket holds now, without waiting, and hands
  // each whole message to the MessageHandler on this thread. False once the connection is closed
  // (the peer closed it, an error, a malformed frame: then it closes, its CloseHandler on the io thread).
  bool ReadAvailable();
  // owner_reads: runs f(descriptor) unless the connection is closed (its descriptor, then, may be
  // another socket's already); false if closed. The descriptor stays open while f runs.
  bool WithReadFd(const std::function<void(int fd)>& f);

  void MarkHandshakeDone();
  void PauseReading();   // io thread
  void ResumeReading();  // io thread
  const std::string& peer() const { return peer_; }
  // Runs on the io thread whenever the send queue drops below the high watermark after being above.
  void SetDrainHandler(std::function<void()> handler) { on_drain_ = std::move(handler); }

 private:
  Connection(std::unique_ptr<ByteStream> stream, ConnectionOptions options);
  void StartRead();
  void OnRead(const ErrorCode& ec, size_t n);
  // Makes room in read_buf_ for what may arrive next (see StartRead).
  void PrepareReadBuffer();
  // `n` more bytes arrived at read_end_: hands out the whole messages. False: a malformed frame
  // (`error` says why).
  bool Consume(size_t n, Status* error);
  void StartWrite();  // io thread
  void OnWrite(const ErrorCode& ec, size_t n);
  void CloseOnIo(const Status& reason);

  std::unique_ptr<ByteStream> stream_;
  ConnectionOptions options_;
  std::string peer_;
  asio::any_io_executor executor_;
  asio::steady_timer handshake_timer_;
  asio::steady_timer cork_timer_;  // io thread
  asio::steady_timer late_timer_;  // io thread

  // Read side: io thread only, or (owner_reads) whoever holds read_mu_; the stream is closed under
  // it too, so a reader never reads a descriptor that was closed and given to another socket.
  std::mutex read_mu_;
  FrameDecoder decoder_;
  std::string read_buf_;
  size_t read_begin_ = 0, read_end_ = 0;
  bool reading_ = false, paused_ = false;
  MessageHandler on_message_;
  CloseHandler on_close_;
  std::function<void()> on_drain_;

  // Write side.
  mutable std::mutex mu_;
  std::condition_variable room_cv_;
  FrameBuilder pending_;           // guarded by mu_: messages not yet handed to the socket
  std::deque<std::string> full_;   // guarded by mu_: sealed frames waiting (pending hit the limit)
  bool full_front_partial_ = false; // guarded by mu_: full_.front() is the rest of a frame begun
  std::string unsent_;             // guarded by mu_: see TakeUnsent()
  size_t queued_bytes_ = 0;        // guarded by mu_: bytes in pending_ + full_ + writing_
  bool write_scheduled_ = false;   // guarded by mu_: a StartWrite is posted or a write in flight
  bool close_after_flush_ = false; // guarded by mu_
  Status flush_reason_;            // guarded by mu_
  bool was_full_ = false;          // guarded by mu_
  // mu_ held, no write in flight: hands the pending frame to the socket from this thread.
  void WriteDirect();
  // Starts the write of what is pending after `delay`, unless one started meanwhile; clears *armed.
  void ArmTimer(asio::steady_timer Connection::*timer, std::chrono::microseconds delay, bool Connection::*armed);
  bool cork_armed_ = false;        // guarded by mu_
  bool late_armed_ = false;        // guarded by mu_
  std::chrono::steady_clock::time_point last_send_;  // guarded by mu_
  std::chrono::steady_clock::time_point pending_since_;  // guarded by mu_: the first message in pending_ came
  std::string writing_;            // io thread: the frame being written

  std::atomic<bool> closed_{false};
};

}  // namespace corral::net
