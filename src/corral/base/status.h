// Status and Result<T>: the one error channel of Corral's C++ code.
//
// A Status is a code plus a message. The code says what a caller may do about it:
//   kUnavailable        transient (peer gone, not connected yet): retry with backoff
//   kDeadlineExceeded   the deadline passed: retry if the caller still wants the answer
//   kAborted            lost a race (stale attempt, connection closed under us): retry the whole step
//   kInvalidArgument    the request is wrong: do not retry
//   kFailedPrecondition the system is not in a state for this: fix the state, then retry
//   kNotFound, kAlreadyExists, kPermissionDenied, kResourceExhausted, kCancelled, kInternal
// No exceptions cross component boundaries; the Python binding turns a Status into an exception.
// Status is a value type; const methods are safe to call from several threads.
#pragma once

#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace corral {

enum class Code {
  kOk = 0,
  kCancelled,
  kInvalidArgument,
  kDeadlineExceeded,
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,
  kFailedPrecondition,
  kAborted,
  kUnavailable,
  kInternal,
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "UNAVAILABLE: connection refused"
  std::string ToString() const;
  // True for codes where repeating the same call later may succeed.
  bool IsRetryable() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

template <typename T>
using Result = std::expected<T, Status>;

inline std::unexpected<Status> Err(Code code, std::string message) {
  return std::unexpected<Status>(Status(code, std::move(message)));
}
inline std::unexpected<Status> Err(Status status) { return std::unexpected<Status>(std::move(status)); }

template <typename... Args>
Status MakeStatus(Code code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace corral

// In a function returning Status: returns the status of `expr` if it is an error.
#define CORRAL_RETURN_IF_ERROR(expr)        \
  do {                                      \
    ::corral::Status _st = (expr);          \
    if (!_st.ok()) return _st;                \
  } while (0)

// The same in a function returning Result<T>.
#define CORRAL_RETURN_IF_ERROR_R(expr)                  \
  do {                                                  \
    ::corral::Status _st = (expr);                      \
    if (!_st.ok()) return ::corral::Err(std::move(_st)); \
  } while (0)
