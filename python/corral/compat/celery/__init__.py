"""Celery's API on Corral's durable tasks: change the imports, keep the code.

    from corral.compat.celery import Celery, chain, group, chord, signature, shared_task   # was: from celery ...
    from corral.compat.celery.schedules import crontab                                     # celery.schedules
    from corral.compat.celery.exceptions import Retry, SoftTimeLimitExceeded               # celery.exceptions
    from corral.compat.celery.result import AsyncResult, GroupResult                       # celery.result
    from corral.compat.celery.utils.log import get_task_logger                             # celery.utils.log

    app = Celery("tasks", broker="redis://...")              # broker/backend accepted and not used

    @app.task(bind=True, autoretry_for=(IOError,), retry_backoff=True, max_retries=5)
    def process_data(self, path): ...

    process_data.delay("/data/x.csv").get(timeout=60)
    process_data.apply_async(("/data/x.csv",), countdown=30, expires=3600, queue="etl", link=report.s())
    app.send_task("tasks.process_data", args=(path,))        # by name, also from a process without tasks.py
    chord(group(a.s(i) for i in range(10)), total.s()).apply_async().get()
    app.apply_beat_schedule()                                # once, from any process: Corral schedules

Tasks are Corral durable tasks: stored before delay() returns, run by workers whose agent imports
the module (``corral start --tasks tasks``), results by id from any process. Celery's rules hold:
a task retries only through ``self.retry()`` and ``autoretry_for``, after ``default_retry_delay``
(or the ``retry_backoff`` countdown), ``max_retries`` times (None: no limit); any other exception,
or the hard ``time_limit``, fails it at once; ``get()`` raises the task's own exception.

docs/celery.md is the migration guide and the table of what holds and what differs.
"""
from . import states
from .app import Celery, Signal, current_app, shared_task
from .canvas import Signature, chain, chord, chunks, group, maybe_signature, signature, subtask, xmap, xstarmap
from .exceptions import MaxRetriesExceededError, Retry
from .result import AsyncResult, EagerResult, GroupResult, ResultSet
from .schedules import crontab
from .task import Task

__all__ = ["Celery", "Task", "shared_task", "current_app", "AsyncResult", "GroupResult", "EagerResult", "ResultSet",
           "Signature", "signature", "subtask", "maybe_signature", "chain", "group", "chord", "chunks", "xmap",
           "xstarmap", "crontab", "states", "Retry", "MaxRetriesExceededError", "Signal"]
