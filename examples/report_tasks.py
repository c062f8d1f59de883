"""Durable task functions for examples/durable_quickstart.py. Workers import this module by name
(`corral.init(tasks=["report_tasks"])`, or agents started with `--tasks report_tasks`)."""
import os
import time

import corral


@corral.task(queue="reports", max_retries=3, retry_backoff=0.2)
def report(day, flaky_marker=None):
    """A nightly report; fails once on purpose when given a marker file, to show a retry."""
    if flaky_marker and not os.path.exists(flaky_marker):
        open(flaky_marker, "w").close()
        raise IOError("the warehouse timed out (on purpose, once)")
    time.sleep(0.05)
    return {"day": day, "rows": len(day) * 1000}


@corral.task(queue="emails")
def email(to):
    time.sleep(0.02)
    return f"sent to {to}"


@corral.task
def heartbeat():
    return time.time()
