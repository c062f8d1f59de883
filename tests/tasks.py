# The user's tasks.py from their Celery setup, with only the imports changed (tests/test_celery.py).
# tasks.py
from corral.compat.celery import Celery

app = Celery('tasks', broker='redis://:password@10.0.0.84:6379/0')

@app.task
def train_model(dataset_path):
    """Train ML model asynchronously"""
    # Your training code here
    return {"status": "complete", "accuracy": 0.95}

@app.task
def process_data(file_path):
    """Process large dataset"""
    # Your processing code here
    return {"processed": True}

# Schedule periodic tasks
from corral.compat.celery.schedules import crontab

app.conf.beat_schedule = {
    'daily-retraining': {
        'task': 'tasks.train_model',
        'schedule': crontab(hour=2, minute=0),  # 2 AM daily
        'args': ('/data/latest.csv',)
    }
}
