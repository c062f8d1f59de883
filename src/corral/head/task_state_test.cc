#include "corral/head/task_state.h"

#include <gtest/gtest.h>

namespace corral::head {
namespace {

TEST(TaskState, Transitions) {
  using S = TaskState;
  EXPECT_TRUE(IsValidTransition(S::kWaitingDeps, S::kQueued));
  EXPECT_TRUE(IsValidTransition(S::kWaitingDeps, S::kFinished));
  EXPECT_FALSE(IsValidTransition(S::kWaitingDeps, S::kDispatched));
  EXPECT_TRUE(IsValidTransition(S::kQueued, S::kDispatched));
  EXPECT_TRUE(IsValidTransition(S::kQueued, S::kFinished));
  EXPECT_TRUE(IsValidTransition(S::kDispatched, S::kQueued));  // retry
  EXPECT_TRUE(IsValidTransition(S::kDispatched, S::kFinished));
  for (S to : {S::kWaitingDeps, S::kQueued, S::kDispatched, S::kFinished})
    EXPECT_FALSE(IsValidTransition(S::kFinished, to));
  EXPECT_STREQ(TaskStateName(S::kDispatched), "running");
}

}  // namespace
}  // namespace corral::head
