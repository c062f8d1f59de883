"""Crash test: durable submissions while the head is killed (kill -9) again and again, and agents
too. Every submission the SDK acknowledged must complete; duplicated effects are counted from a
ledger the tasks append to. Sizes: CORRAL_CRASH_TASKS (10,000) and CORRAL_CRASH_KILLS (20);
the seed is printed, and CORRAL_CRASH_SEED reruns a run."""
import collections
import os
import random
import tempfile
import threading
import time

import pytest

import corral
import durable_tasks
import netns
from conftest import wait_until

pytestmark = pytest.mark.skipif(bool(netns.available()), reason=netns.available() or "")


def test_acknowledged_durable_tasks_survive_repeated_head_and_agent_kills():
    tasks = int(os.environ.get("CORRAL_CRASH_TASKS", "10000"))
    head_kills = int(os.environ.get("CORRAL_CRASH_KILLS", "20"))
    seed = int(os.environ.get("CORRAL_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"\n[crash] seed {seed} (rerun with CORRAL_CRASH_SEED={seed}), {tasks} tasks, {head_kills} head kills")
    rng = random.Random(seed)
    net = netns.NetCluster(agents=2, agent_args=("--tasks", "durable_tasks"), num_cpus=2)
    ledger = tempfile.mktemp(prefix="corral-crash-")
    acknowledged = []
    try:
        net.connect()
        wait_until(lambda: sum(n["state"] == "alive" and bool(n["python_version"]) for n in corral.nodes()) == 2,
                   what="2 nodes")
        batch = 50
        batches = (tasks + batch - 1) // batch
        # The head dies at random moments during the submissions: just before (or while) these
        # batches go out, after a random delay; now and then an agent dies too.
        kill_at = set(rng.sample(range(1, batches), min(head_kills, batches - 1)))
        kills = collections.Counter()
        killers = []

        def kill_head(delay, agent):
            time.sleep(delay)
            if agent is not None:
                net.kill(agent)
                net.start(agent)
                kills["agent"] += 1
            net.restart_head(down_s=rng.uniform(0.0, 0.2))
            kills["head"] += 1

        for b in range(batches):
            if b in kill_at:
                agent = rng.choice(net.agents) if rng.random() < 0.25 else None
                t = threading.Thread(target=kill_head, args=(rng.uniform(0, 0.05), agent), daemon=True)
                t.start()
                killers.append(t)
            items = [(ledger, f"key-{i}") for i in range(b * batch, min(tasks, (b + 1) * batch))]
            # Keys make a resent batch the same tasks, whatever the head had stored before it died.
            specs = [durable_tasks.append.options(idempotency_key=args[1])._spec(args, {}) for args in items]
            acknowledged += corral.durable._submit(specs)
            for t in killers:
                t.join(60)
            killers.clear()
        print(f"[crash] {len(acknowledged)} acknowledged; killed the head {kills['head']} times during the "
              f"submissions, agents {kills['agent']} times")
        assert kills["head"] == len(kill_at)

        def done():
            return len(corral.tasks(state="success", limit=tasks + 1)) == len(set(acknowledged))
        wait_until(done, timeout=240, what="every acknowledged task to succeed")
        with open(ledger) as f:
            runs = collections.Counter(line.strip() for line in f)
        keys = {f"key-{i}" for i in range(tasks)}
        lost = keys - set(runs)
        duplicates = sum(n - 1 for n in runs.values())
        failed = corral.tasks(state="failure", limit=10)
        print(f"[crash] submitted {tasks} / acknowledged {len(set(acknowledged))} / completed {len(keys & set(runs))} "
              f"/ lost {len(lost)} / duplicate effects {duplicates} / failed {len(failed)}")
        assert len(set(acknowledged)) == tasks
        assert not lost, sorted(lost)[:10]
        assert not failed, failed
    finally:
        corral.shutdown()
        net.close()


def test_canvases_and_queue_settings_survive_repeated_head_kills():
    """Chains and chords submitted while the head is killed -9 again and again: each step runs
    once its parents succeeded, with their results, whatever restart came between; a queue's
    settings outlive the kills too."""
    from corral.compat.celery import chain, chord
    import celery_more
    kills_wanted = int(os.environ.get("CORRAL_CRASH_CANVAS_KILLS", "5"))
    seed = int(os.environ.get("CORRAL_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"\n[crash canvas] seed {seed} (rerun with CORRAL_CRASH_SEED={seed}), {kills_wanted} head kills")
    rng = random.Random(seed)
    net = netns.NetCluster(agents=2, agent_args=("--tasks", "durable_tasks,celery_more"), num_cpus=2)
    try:
        net.connect()
        wait_until(lambda: sum(n["state"] == "alive" and bool(n["python_version"]) for n in corral.nodes()) == 2,
                   what="2 nodes")
        corral.queue("crashq", concurrency=3, weight=2)
        add, total = celery_more.add, celery_more.total
        rounds = 40
        kill_at = set(rng.sample(range(1, rounds), kills_wanted))
        chains, chords, killers = [], [], []
        for r in range(rounds):
            if r in kill_at:
                t = threading.Thread(target=lambda: net.restart_head(down_s=rng.uniform(0.0, 0.2)), daemon=True)
                t.start()
                killers.append(t)
            chains.append((r, chain(add.s(r, 1), add.s(10), add.s(100)).apply_async(queue="crashq")))
            chords.append((r, chord([add.s(r, i) for i in range(4)], total.s()).apply_async()))
            for t in killers:
                t.join(60)
            killers.clear()
        bad = [(r, c.get(timeout=120)) for r, c in chains if c.get(timeout=120) != r + 111]
        bad += [(r, c.get(timeout=120)) for r, c in chords if c.get(timeout=120) != 4 * r + 6]
        q = {q["name"]: q for q in corral.queues()}["crashq"]
        print(f"[crash canvas] {rounds} chains of 3 and {rounds} chords of 4+1 across {kills_wanted} head kills: "
              f"{len(bad)} wrong or lost")
        assert not bad, bad[:5]
        assert (q["concurrency"], q["weight"]) == (3, 2)
    finally:
        corral.shutdown()
        net.close()
