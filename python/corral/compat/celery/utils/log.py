"""celery.utils.log: ``get_task_logger(__name__)``, whose records name the task running.

In a worker the records go to its stderr, which the agent keeps in the node's log (and sends to
the driver that submitted the task): ``[2026-11-30 02:00:01,123: INFO/tasks.add[<task id>]] text``.
"""
import logging
import sys

_FORMAT = "[%(asctime)s: %(levelname)s/%(task_name)s[%(task_id)s]] %(message)s"


class _TaskFilter(logging.Filter):
    def filter(self, record):
        from ..task import current_request
        req = current_request()
        record.task_name = (req.task if req is not None else None) or "???"
        record.task_id = (req.id if req is not None else None) or "???"
        return True


_handler = None


def get_task_logger(name):
    """A logger under "celery.task" whose records carry the running task's name and id."""
    global _handler
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter(_FORMAT))
        _handler.addFilter(_TaskFilter())
        base = logging.getLogger("celery.task")
        base.addHandler(_handler)
        base.propagate = False
        if base.level == logging.NOTSET:
            base.setLevel(logging.INFO)
    logger = logging.getLogger(name if name.startswith("celery.task") else f"celery.task.{name}")
    return logger


def get_logger(name):
    return logging.getLogger(name)
