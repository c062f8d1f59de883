"""Durable tasks on a local cluster: stored before submit() returns, results by id, retries,
queues with weights and limits, and a schedule. Run after setup:

    .venv/bin/python examples/durable_quickstart.py

The task functions live in examples/report_tasks.py: workers import them by name.
"""
import os
import tempfile
import time

import corral
import report_tasks


def main():
    corral.init(num_cpus=2, tasks=["report_tasks"])
    corral.queue("reports", weight=3)                      # 3:1 against "emails" when both are busy
    corral.queue("emails", rate_limit="20/s")              # cluster-wide

    marker = os.path.join(tempfile.mkdtemp(), "flaky")
    h = report_tasks.report.options(priority=5, idempotency_key="report-2026-11-26").submit("2026-11-26", marker)
    print(f"submitted durable task {h.id} (on the head's disk now)")
    again = report_tasks.report.options(idempotency_key="report-2026-11-26").submit("2026-11-26")
    print(f"the same idempotency key is the same task: {again == h}")
    print(f"result: {h.get(timeout=60)} after {corral.result(h.id).runs} runs (the first failed and was retried)")

    t = time.perf_counter()
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    reports = report_tasks.report.map_submit(days)         # one commit for all
    emails = report_tasks.email.map_submit([f"user{i}@example.com" for i in range(40)])
    rows = sum(r.get(timeout=120)["rows"] for r in reports)
    sent = [e.get(timeout=120) for e in emails]
    print(f"{len(reports)} reports ({rows} rows) and {len(sent)} emails in {time.perf_counter() - t:.1f}s")
    for q in corral.queues():
        print(f"  queue {q['name']:8} weight {q['weight']:g}  done {q['succeeded']:3}  failed {q['failed']}")

    corral.schedule("heartbeat", report_tasks.heartbeat, every=1)
    time.sleep(2.5)
    fires = corral.schedule_history("heartbeat")
    print(f"schedule 'heartbeat' fired {len(fires)} times, each slot once; then removed")
    corral.remove_schedule("heartbeat")
    corral.shutdown()


if __name__ == "__main__":
    main()
