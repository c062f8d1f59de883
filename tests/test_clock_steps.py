"""Schedules on the real head binary while its wall clock steps (libfaketime, as an NTP step or a
wrong clock corrected would): a step back fires nothing again, a step forward applies the misfire
policy to the slots it jumped over. CLOCK_BOOTTIME (liveness, timers) is left alone, as the kernel
leaves it on a real step.

Also cron schedules (not `every=`) with the head's clock set where it matters: a per-minute schedule
across a real head restart (kill -9, started again on the same state dir), and schedules in
Europe/Berlin across both daylight-saving transitions (docs/architecture.md: a slot in a gap fires
once at the gap's end, a slot in a repeated hour once at its first occurrence)."""
import calendar
import datetime
import os
import time
import zoneinfo

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


# ---- cron schedules across a head restart and across daylight-saving transitions ----

class HeadClock:
    """The head's wall clock under libfaketime: real time plus an offset written to a file that the
    head re-reads at most a second later. Steps go forward only, and each test steps only over
    moments where, by the documented semantics, no slot of its schedules falls."""

    def __init__(self, path, fake_now_s):
        self.path = path
        self.set(fake_now_s)

    def env(self):
        return {"LD_PRELOAD": FAKETIME, "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_CACHE_DURATION": "1", "DONT_FAKE_MONOTONIC": "1"}

    def set(self, fake_now_s):
        self.offset = fake_now_s - time.time()
        self.path.write_text(f"{self.offset:+.3f}\n")

    def now(self):
        return time.time() + self.offset

    def step_to(self, fake_now_s):
        assert fake_now_s > self.now(), "a step forward"
        self.set(fake_now_s)


def faked_cluster(clock):
    assert os.path.exists(FAKETIME), "libfaketime is missing: scripts/setup.sh --with-tests installs it (faketime)"
    c = Cluster(head_env=clock.env())
    c.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
    c.connect()
    c.wait_nodes(1)
    return c


def slots(name):
    """The slots of `name` that fired, in seconds since the epoch (whole seconds), in order."""
    return sorted(f["slot_ns"] / 1e9 for f in corral.schedule_history(name, 1000))


def next_slot(name):
    return {s["name"]: s["next_slot_ns"] / 1e9 for s in corral.schedules()}[name]


def effects_of_fires(names, ledger):
    """Pauses the schedules, waits for every fired task to finish, and returns the ledger's effects
    ("start KEY" / "end KEY") with the number of fires and of runs per schedule."""
    for name in names:
        corral.pause_schedule(name)
    fires = {name: corral.schedule_history(name, 1000) for name in names}
    wait_until(lambda: all(corral.result(f["task_id"]).state == "SUCCESS" for fs in fires.values() for f in fs),
               what="every fired task done")
    runs = {name: sum(corral.result(f["task_id"]).runs for f in fs) for name, fs in fires.items()}
    with open(ledger) as f:
        effects = sorted(" ".join(line.split()[:2]) for line in f)
    return effects, {name: len(fs) for name, fs in fires.items()}, runs


def expected_effects(counts):
    return sorted(f"{kind} {name}" for name, n in counts.items() for kind in ("start", "end") for _ in range(n))


def utc(*ymdhm):
    return float(calendar.timegm(datetime.datetime(*ymdhm).timetuple()))


def test_cron_schedule_across_a_head_restart(tmp_path):
    """A per-minute cron schedule fires, the head is killed (-9) right after the fire and started
    again on the same state dir, and the schedule goes on: each minute once, one run each."""
    clock = HeadClock(tmp_path / "offset", time.time())
    c = faked_cluster(clock)
    try:
        ledger = str(tmp_path / "ledger")
        first = corral.schedule("minutely", durable_tasks.record, cron="* * * * *",
                                args=(ledger, "minutely"))["next_slot_ns"] / 1e9
        assert first % 60 == 0
        if first - clock.now() > 3:
            clock.step_to(first - 2)  # just before the minute (over no slot): it fires in 2 s, not in up to 60
        wait_until(lambda: slots("minutely"), what="the first minute's fire")
        assert slots("minutely") == [first]

        # Killed within the fired slot's misfire grace: the restarted head must not fire it again.
        c.restart_head()
        c.wait_nodes(1)
        expected = [first]
        for minute in (first + 60, first + 120):
            clock.step_to(minute - 2)
            wait_until(lambda: len(slots("minutely")) > len(expected), what=f"the fire at {minute}")
            expected.append(minute)
            assert slots("minutely") == expected, "each minute fires once, also across the restart"
        effects, fires, runs = effects_of_fires(["minutely"], ledger)
        refused = corral.cluster_status()["counters"].get("schedule_slots_already_fired", 0)
        print(f"\n[cron across a head restart] slots {[int(s) for s in slots('minutely')]}, "
              f"{refused} refused as fired before, {len(effects) // 2} runs")
        assert fires == runs == {"minutely": 3}
        assert effects == expected_effects(fires), effects
    finally:
        corral.shutdown()
        c.stop()


def test_cron_across_the_spring_forward_gap(tmp_path):
    """Europe/Berlin, 2027-03-28: at 02:00 CET the clocks jump to 03:00 CEST, so 02:00-02:59 never
    happens. A slot in the gap fires once, at the gap's end; several slots in it fire as one."""
    gap = utc(2027, 3, 28, 1, 0)
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert [datetime.datetime.fromtimestamp(t, berlin).strftime("%H:%M %Z") for t in (gap - 60, gap)] == \
        ["01:59 CET", "03:00 CEST"]
    clock = HeadClock(tmp_path / "offset", gap - 120)  # 01:58 CET
    c = faked_cluster(clock)
    try:
        ledger = str(tmp_path / "ledger")
        for name, cron in [("half-past-two", "30 2 * * *"), ("quarters-of-two", "*/15 2 * * *")]:
            s = corral.schedule(name, durable_tasks.record, cron=cron, tz="Europe/Berlin", args=(ledger, name),
                                misfire="run_all")
            assert s["next_slot_ns"] / 1e9 == gap, (name, s["next_slot_ns"])
        corral.schedule("tick", durable_tasks.add, every=1, args=(0, 0), misfire="skip")
        clock.step_to(gap - 2)
        wait_until(lambda: slots("tick") and slots("tick")[-1] >= gap + 3, what="the head's clock past the gap")
        print(f"\n[cron across a DST gap] 30 2 * * * fired {slots('half-past-two')}, "
              f"*/15 2 * * * fired {slots('quarters-of-two')} (gap ends at {gap})")
        assert slots("half-past-two") == [gap]
        assert slots("quarters-of-two") == [gap], "02:00, 02:15, 02:30 and 02:45 fire once, together"
        assert next_slot("half-past-two") == utc(2027, 3, 29, 0, 30)  # 02:30 CEST the next day
        assert next_slot("quarters-of-two") == utc(2027, 3, 29, 0, 0)  # 02:00 CEST the next day
        effects, fires, runs = effects_of_fires(["half-past-two", "quarters-of-two"], ledger)
        assert fires == runs == {"half-past-two": 1, "quarters-of-two": 1}
        assert effects == expected_effects(fires), effects
    finally:
        corral.shutdown()
        c.stop()


def test_cron_across_the_fall_back_repeat(tmp_path):
    """Europe/Berlin, 2027-10-31: at 03:00 CEST the clocks go back to 02:00 CET, so 02:00-02:59
    happens twice. A slot in the repeated hour fires once, at its first occurrence."""
    back = utc(2027, 10, 31, 1, 0)
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert [datetime.datetime.fromtimestamp(t, berlin).strftime("%H:%M %Z") for t in (back - 60, back)] == \
        ["02:59 CEST", "02:00 CET"]
    clock = HeadClock(tmp_path / "offset", back - 2400)  # 02:20 CEST
    c = faked_cluster(clock)
    try:
        ledger = str(tmp_path / "ledger")
        corral.schedule("tick", durable_tasks.add, every=1, args=(0, 0), misfire="skip")
        s = corral.schedule("half-past-two", durable_tasks.record, cron="30 2 * * *", tz="Europe/Berlin",
                            args=(ledger, "half-past-two"), misfire="run_all")
        assert s["next_slot_ns"] / 1e9 == back - 1800  # 02:30 CEST
        clock.step_to(back - 1800 - 2)
        wait_until(lambda: slots("half-past-two"), what="02:30 CEST firing")

        clock.step_to(back - 65)  # 02:58:55 CEST
        wait_until(lambda: slots("tick")[-1] >= back - 64, what="the head's clock at 02:58:56 CEST")
        s = corral.schedule("each-minute-of-two", durable_tasks.record, cron="* 2 * * *", tz="Europe/Berlin",
                            args=(ledger, "each-minute-of-two"), misfire="run_all")
        assert s["next_slot_ns"] / 1e9 == back - 60  # 02:59 CEST
        wait_until(lambda: slots("each-minute-of-two"), what="02:59 CEST firing")
        # Into the repeated hour: 02:00 CET is jumped over (with run_all it would still fire, late, if it
        # were a slot), 02:01 and 02:02 CET pass on the clock.
        # (A tick fired at or after a slot means the head's clock passed it: every fire of that moment
        # is recorded by then.)
        clock.step_to(back + 120 - 2)
        wait_until(lambda: slots("tick")[-1] >= back + 121, what="the head's clock at 02:02:01 CET")
        clock.step_to(back + 1800 - 2)  # and past 02:30 CET
        wait_until(lambda: slots("tick")[-1] >= back + 1801, what="the head's clock at 02:30:01 CET")
        print(f"\n[cron across a DST repeat] 30 2 * * * fired {slots('half-past-two')}, "
              f"* 2 * * * fired {slots('each-minute-of-two')} (clocks go back at {back})")
        assert slots("half-past-two") == [back - 1800], "02:30 fires at 02:30 CEST only, not again at 02:30 CET"
        assert slots("each-minute-of-two") == [back - 60], "no minute of the repeated 02:xx CET fires"
        assert next_slot("half-past-two") == utc(2027, 11, 1, 1, 30)  # 02:30 CET the next day
        assert next_slot("each-minute-of-two") == utc(2027, 11, 1, 1, 0)  # 02:00 CET the next day
        effects, fires, runs = effects_of_fires(["half-past-two", "each-minute-of-two"], ledger)
        assert fires == runs == {"half-past-two": 1, "each-minute-of-two": 1}
        assert effects == expected_effects(fires), effects
    finally:
        corral.shutdown()
        c.stop()
