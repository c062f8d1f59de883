"""The Celery application the benchmark's workers load (`celery -A celery_app worker`)."""
import os

from celery import Celery

broker = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=broker, backend=broker)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json", "pickle"],
                worker_prefetch_multiplier=4, broker_connection_retry_on_startup=True)


@app.task
def noop(i):
    return i


@app.task(serializer="pickle")
def total(a):
    return float(a.sum())


@app.task(acks_late=True)
def durable_noop(i):
    return i
