"""Schedules on the real head binary while its wall clock steps (libfaketime, as an NTP step or a
wrong clock corrected would): a step back fires nothing again, a step forward applies the misfire
policy to the slots it jumped over. CLOCK_BOOTTIME (liveness, timers) is left alone, as the kernel
leaves it on a real step."""
import os
import time

import pytest

import corral
import durable_tasks
from conftest import Cluster, wait_until

FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def fires():
    return sorted(f["slot_ns"] for f in corral.schedule_history("tick", 1000))


def counter(name):
    return corral.cluster_status()["counters"].get(name, 0)


def test_wall_clock_steps_on_the_real_head(tmp_path):
    assert os.path.exists(FAKETIME), "libfaketime is missing: scripts/setup.sh --with-tests installs it (faketime)"
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    c = Cluster(head_env={"LD_PRELOAD": FAKETIME, "FAKETIME_TIMESTAMP_FILE": str(offset),
                          "FAKETIME_CACHE_DURATION": "1", "DONT_FAKE_MONOTONIC": "1"})
    try:
        c.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
        c.connect()
        c.wait_nodes(1)
        corral.schedule("tick", durable_tasks.add, every=1, args=(1, 1), misfire="run_once")
        wait_until(lambda: len(fires()) >= 3, what="3 fires")
        before = fires()

        offset.write_text("-600\n")  # ten minutes back
        time.sleep(2)  # the head reads the offset within a second
        after_back = fires()
        time.sleep(3)
        assert fires() == after_back, "after a step back, no slot fires (again) until the clock passes the last one"

        offset.write_text("+600\n")  # ten minutes ahead of the real time
        time.sleep(3)
        after = fires()
        missed = counter("schedule_slots_missed")
        jumped = after[len(after_back):]
        print(f"\n[clock steps] {len(before)} fires, step back 10 min: 0 fires in 3 s; step forward 10 min: "
              f"{len(jumped)} fires, {missed} late slots skipped (misfire=run_once)")
        assert len(set(after)) == len(after) and after == sorted(after), "each slot fires once"
        assert missed >= 500, "the ~570 slots more than 30 s late are skipped, but for the latest (run_once)"
        # The latest late slot fires once, the slots within the 30 s grace fire, then one a second.
        assert 25 <= len(jumped) <= 45, jumped
        assert jumped[-1] > time.time_ns() + 590 * 10**9, "slots follow the head's (stepped) clock"
    finally:
        corral.shutdown()
        c.stop()
