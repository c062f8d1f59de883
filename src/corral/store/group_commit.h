// GroupCommitter: runs a Store on its own thread and lets concurrent writers share commits.
//
// Whatever was queued while the previous commit was in flight goes into the next one: under load
// many submissions pay for one fsync together; alone, a submission commits at once. Callbacks run
// on the committer's thread once their commit is durable (or failed): the head posts them back to
// its io thread, so it never waits for a disk. Operations run in the order they were queued.
#pragma once

#include "corral/base/histogram.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <variant>

#include "corral/store/store.h"

namespace corral::store {

class GroupCommitter {
 public:
  using SubmitDone = std::function<void(Result<std::vector<SubmitResult>>)>;
  using UpdateDone = std::function<void(Status)>;

  explicit GroupCommitter(std::unique_ptr<Store> store);
  // Finishes everything queued, then stops.
  ~GroupCommitter();

  void Submit(std::vector<DurableTask> tasks, SubmitDone done);
  void Update(std::vector<TaskUpdate> updates, UpdateDone done);
  // Runs fn with the store on the committer's thread, after everything queued before it (reads,
  // schedules, purges). fn must not call back into this committer.
  void Run(std::function<void(Store&)> fn);

  int64_t commits() const;      // transactions that carried submissions or updates
  int64_t submissions() const;  // Submit calls
  // How long each commit of submissions or updates took, its fsync included (seconds).
  Histogram commit_seconds() const;

 private:
  struct SubmitOp {
    std::vector<DurableTask> tasks;
    SubmitDone done;
  };
  struct UpdateOp {
    std::vector<TaskUpdate> updates;
    UpdateDone done;
  };
  using Op = std::variant<SubmitOp, UpdateOp, std::function<void(Store&)>>;

  void Loop();
  void Push(Op op);

  std::unique_ptr<Store> store_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;         // guarded by mu_
  bool stopping_ = false;        // guarded by mu_
  int64_t commits_ = 0;          // guarded by mu_
  int64_t submissions_ = 0;      // guarded by mu_
  Histogram commit_seconds_;     // guarded by mu_
  std::thread thread_;
};

}  // namespace corral::store
