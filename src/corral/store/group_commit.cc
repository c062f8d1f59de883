#include "corral/store/group_commit.h"

#include <chrono>

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

Histogram GroupCommitter::commit_seconds() const {
  std::lock_guard lock(mu_);
  return commit_seconds_;
}

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
    // Consecutive submissions and updates share one transaction (one fsync); Run() operations
    // keep their place in the order.
    for (size_t i = 0; i < ops.size();) {
      if (!std::holds_alternative<std::function<void(Store&)>>(ops[i])) {
        std::vector<DurableTask> tasks;
        std::vector<TaskUpdate> updates;
        size_t j = i;
        for (; j < ops.size() && !std::holds_alternative<std::function<void(Store&)>>(ops[j]); ++j) {
          if (auto* sub = std::get_if<SubmitOp>(&ops[j]))
            for (auto& t : sub->tasks) tasks.push_back(std::move(t));
          else
            for (auto& u : std::get<UpdateOp>(ops[j]).updates) updates.push_back(std::move(u));
        }
        auto started = std::chrono::steady_clock::now();
        auto result = store_->Apply(tasks, updates);
        {
          std::lock_guard lock(mu_);
          commits_++;
          commit_seconds_.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        }
        size_t at = 0;
        for (size_t k = i; k < j; ++k) {
          if (auto* sub = std::get_if<SubmitOp>(&ops[k])) {
            size_t n = sub->tasks.size();
            if (!result) sub->done(Err(result.error()));
            else
              sub->done(std::vector<SubmitResult>(result->begin() + static_cast<long>(at),
                                                  result->begin() + static_cast<long>(at + n)));
            at += n;
          } else if (auto& done = std::get<UpdateOp>(ops[k]).done) {
            done(result ? Status::Ok() : result.error());
          }
        }
        i = j;
      } else {
        std::get<std::function<void(Store&)>>(ops[i])(*store_);
        ++i;
      }
    }
  }
}

}  // namespace corral::store
