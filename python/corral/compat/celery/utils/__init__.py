"""celery.utils paths the facade provides (``utils.log``)."""
