"""A driver reconnecting to a restarted head: what it sent just before the loss is not lost."""
import psutil
import pytest

import corral
from conftest import wait_until


@corral.remote
def sleeper(seconds, value):
    import time
    time.sleep(seconds)
    return value


def test_a_cancel_sent_on_a_connection_that_dies_unread_is_not_lost(cluster):
    # The head is frozen, so the cancel sits unread in its socket; then it dies and restarts. The
    # driver's replay sends the task again: the cancel must follow it, not vanish with the socket.
    cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    ref = sleeper.remote(8, "ran to the end")
    wait_until(lambda: corral.cluster_status()["counters"].get("tasks_dispatched", 0) >= 1, what="the task to start")
    head = psutil.Process(cluster.head.pid)
    head.suspend()
    corral.cancel(ref)          # written to the socket; the head never reads it
    cluster.restart_head()      # kill -9 (of the frozen head), start again: the driver replays
    with pytest.raises(corral.TaskCancelledError):
        corral.get(ref, timeout=60)
