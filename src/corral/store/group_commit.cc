#include "corral/store/group_commit.h"

namespace corral::store {

GroupCommitter::GroupCommitter(std::unique_ptr<Store> store) : store_(std::move(store)) {
  thread_ = std::thread([this] { Loop(); });
}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void GroupCommitter::Push(Op op) {
  {
    std::lock_guard lock(mu_);
    if (std::holds_alternative<SubmitOp>(op)) submissions_++;
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void GroupCommitter::Submit(std::vector<DurableTask> tasks, SubmitDone done) {
  Push(SubmitOp{std::move(tasks), std::move(done)});
}

void GroupCommitter::Update(std::vector<TaskUpdate> updates, UpdateDone done) {
  Push(UpdateOp{std::move(updates), std::move(done)});
}

void GroupCommitter::Run(std::function<void(Store&)> fn) { Push(std::move(fn)); }

int64_t GroupCommitter::commits() const {
  std::lock_guard lock(mu_);
  return commits_;
}

int64_t GroupCommitter::submissions() const {
  std::lock_guard lock(mu_);
  return submissions_;
}

void GroupCommitter::Loop() {
  while (true) {
    std::deque<Op> ops;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is done
      ops.swap(queue_);
    }
    // Consecutive operations of one kind share a transaction; order is kept across kinds.
    for (size_t i = 0; i < ops.size();) {
      if (std::holds_alternative<SubmitOp>(ops[i])) {
        std::vector<DurableTask> all;
        size_t j = i;
        for (; j < ops.size() && std::holds_alternative<SubmitOp>(ops[j]); ++j)
          for (auto& t : std::get<SubmitOp>(ops[j]).tasks) all.push_back(std::move(t));
        auto result = store_->Submit(all);
        {
          std::lock_guard lock(mu_);
          commits_++;
        }
        size_t at = 0;
        for (size_t k = i; k < j; ++k) {
          auto& op = std::get<SubmitOp>(ops[k]);
          size_t n = op.tasks.size();
          if (!result) {
            op.done(Err(result.error()));
          } else {
            op.done(std::vector<SubmitResult>(result->begin() + static_cast<long>(at),
                                              result->begin() + static_cast<long>(at + n)));
          }
          at += n;
        }
        i = j;
      } else if (std::holds_alternative<UpdateOp>(ops[i])) {
        std::vector<TaskUpdate> all;
        size_t j = i;
        for (; j < ops.size() && std::holds_alternative<UpdateOp>(ops[j]); ++j)
          for (auto& u : std::get<UpdateOp>(ops[j]).updates) all.push_back(std::move(u));
        Status s = store_->Update(all);
        {
          std::lock_guard lock(mu_);
          commits_++;
        }
        for (size_t k = i; k < j; ++k)
          if (auto& done = std::get<UpdateOp>(ops[k]).done) done(s);
        i = j;
      } else {
        std::get<std::function<void(Store&)>>(ops[i])(*store_);
        ++i;
      }
    }
  }
}

}  // namespace corral::store
