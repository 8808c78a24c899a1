import logging
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from config.security import MaskEmailsFilter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("waypoint")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def mask_emails_in_worker_logs(logger: logging.Logger, **kwargs):
    """Celery replaces the root logger's handlers (Django's LOGGING, with its masking filter)
    by its own in workers and beat, and gives task loggers handlers of their own: each gets
    the filter again. Handler filters also see what propagates from child loggers and the
    worker's redirected stdout (the console email backend's output)."""
    for handler in logger.handlers:
        handler.addFilter(MaskEmailsFilter())
