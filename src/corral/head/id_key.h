// IdKey: a task or object id as the key of the head's tables.
//
// Task and object ids are 16 bytes (the client's 8-byte id, then a counter: base/ids.h), one byte
// past std::string's in-place capacity, so every id held in a std::string costs a heap block as
// well. An IdKey holds up to 23 bytes in place (24 bytes in all) and longer ids, such as a durable
// run's "<id>#<attempt>", on the heap. A million queued tasks hold each id three times (the task
// table, the queue, the waiting list of an argument): this is most of the head's saving per task.
//
// A value type; not thread-safe beyond what a std::string is.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace corral::head {

class IdKey {
 public:
  IdKey() { tag() = 0; }
  IdKey(std::string_view id) { Assign(id); }  // NOLINT(google-explicit-constructor): ids convert freely
  IdKey(const std::string& id) : IdKey(std::string_view(id)) {}  // NOLINT(google-explicit-constructor)
  IdKey(const IdKey& other) { Assign(other.view()); }
  IdKey(IdKey&& other) noexcept {
    std::memcpy(bytes_, other.bytes_, sizeof(bytes_));
    other.tag() = 0;
  }
  IdKey& operator=(const IdKey& other) {
    if (this != &other) {
      IdKey copy(other);
      *this = std::move(copy);
    }
    return *this;
  }
  IdKey& operator=(IdKey&& other) noexcept {
    if (this != &other) {
      Free();
      std::memcpy(bytes_, other.bytes_, sizeof(bytes_));
      other.tag() = 0;
    }
    return *this;
  }
  ~IdKey() { Free(); }

  std::string_view view() const {
    if (tag() == kOnHeap) return {heap().data, heap().size};
    return {bytes_, static_cast<size_t>(static_cast<unsigned char>(tag()))};
  }
  std::string str() const { return std::string(view()); }
  bool empty() const { return view().empty(); }
  void clear() { Free(); }
  friend bool operator==(const IdKey& a, const IdKey& b) { return a.view() == b.view(); }

  struct Hash {
    size_t operator()(const IdKey& key) const noexcept {
      std::string_view v = key.view();
      if (v.size() != 16) return std::hash<std::string_view>()(v);
      uint64_t client, counter;  // ids from one client differ in the counter: mix both halves
      std::memcpy(&client, v.data(), 8);
      std::memcpy(&counter, v.data() + 8, 8);
      uint64_t h = (client ^ __builtin_bswap64(counter)) * 0x9E3779B97F4A7C15ull;
      return static_cast<size_t>(h ^ (h >> 29));
    }
  };

 private:
  static constexpr size_t kInPlace = 23;
  static constexpr char kOnHeap = static_cast<char>(0xFF);
  struct Heap {
    char* data;
    size_t size;
  };
  char& tag() { return bytes_[kInPlace]; }
  char tag() const { return bytes_[kInPlace]; }
  Heap& heap() { return *reinterpret_cast<Heap*>(bytes_); }
  const Heap& heap() const { return *reinterpret_cast<const Heap*>(bytes_); }
  void Assign(std::string_view id) {
    if (id.size() <= kInPlace) {
      std::memcpy(bytes_, id.data(), id.size());
      tag() = static_cast<char>(id.size());
      return;
    }
    char* data = new char[id.size()];
    std::memcpy(data, id.data(), id.size());
    heap() = Heap{data, id.size()};
    tag() = kOnHeap;
  }
  void Free() {
    if (tag() == kOnHeap) delete[] heap().data;
    tag() = 0;
  }

  alignas(Heap) char bytes_[kInPlace + 1];
};

}  // namespace corral::head
