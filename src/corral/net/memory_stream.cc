#include "corral/net/memory_stream.h"

#include <cstring>
#include <deque>

namespace corral::net {
namespace {

// What one direction carries: bytes written and not yet read, and a reader waiting for them.
struct Channel {
  std::string data;
  bool closed = false;
  asio::mutable_buffer read_buf;
  IoHandler reader;
};

class MemoryStream : public ByteStream {
 public:
  MemoryStream(asio::any_io_executor ex, std::shared_ptr<Channel> in, std::shared_ptr<Channel> out, std::string name)
      : ex_(std::move(ex)), in_(std::move(in)), out_(std::move(out)), name_(std::move(name)) {}
  ~MemoryStream() override { Close(); }

  void AsyncReadSome(asio::mutable_buffer buffer, IoHandler handler) override {
    in_->read_buf = buffer;
    in_->reader = std::move(handler);
    Deliver(in_, ex_);
  }

  void AsyncWrite(asio::const_buffer buffer, IoHandler handler) override {
    if (out_->closed) {
      asio::post(ex_, [handler = std::move(handler)] { handler(asio::error::broken_pipe, 0); });
      return;
    }
    out_->data.append(static_cast<const char*>(buffer.data()), buffer.size());
    Deliver(out_, ex_);
    asio::post(ex_, [handler = std::move(handler), n = buffer.size()] { handler(ErrorCode(), n); });
  }

  void Close() override {
    for (auto& ch : {in_, out_}) {
      if (ch->closed) continue;
      ch->closed = true;
      Deliver(ch, ex_);
    }
  }

  std::string peer() const override { return name_; }
  asio::any_io_executor executor() override { return ex_; }

 private:
  // Completes a pending read on `ch` if there is data or the channel closed.
  static void Deliver(const std::shared_ptr<Channel>& ch, const asio::any_io_executor& ex) {
    if (!ch->reader || (ch->data.empty() && !ch->closed)) return;
    IoHandler reader = std::move(ch->reader);
    ch->reader = nullptr;
    if (ch->data.empty()) {
      asio::post(ex, [reader = std::move(reader)] { reader(asio::error::eof, 0); });
      return;
    }
    size_t n = std::min(ch->data.size(), ch->read_buf.size());
    std::memcpy(ch->read_buf.data(), ch->data.data(), n);
    ch->data.erase(0, n);
    asio::post(ex, [reader = std::move(reader), n] { reader(ErrorCode(), n); });
  }

  asio::any_io_executor ex_;
  std::shared_ptr<Channel> in_, out_;
  std::string name_;
};

}  // namespace

std::pair<std::unique_ptr<ByteStream>, std::unique_ptr<ByteStream>> MakeMemoryStreamPair(
    asio::any_io_executor executor, std::string name_a, std::string name_b) {
  auto a_to_b = std::make_shared<Channel>();
  auto b_to_a = std::make_shared<Channel>();
  // Each side's peer() names the other end.
  return {std::make_unique<MemoryStream>(executor, b_to_a, a_to_b, std::move(name_b)),
          std::make_unique<MemoryStream>(executor, a_to_b, b_to_a, std::move(name_a))};
}

}  // namespace corral::net
