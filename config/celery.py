import gc
import logging
import os

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_init,
    worker_ready,
)

from config.security import MaskEmailsFilter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# Celery's Django fix-up runs every system check when a worker starts (and ignores what they
# find). The URL checks import the URLconf, which imports every page and API of the site:
# the report's numpy, scipy, statsmodels and pandas among them, about 120 MB of a worker that
# never reports. `check_worker` below runs the others instead.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

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


@worker_init.connect
def check_worker(**kwargs):
    """The system checks Celery's fix-up would run at a worker's start, but the URL checks
    (`manage.py check` and `migrate` run those): an error, such as a setting written wrong,
    is logged. Nothing here imports the URLconf."""
    from django.core.checks import Tags
    from django.core.checks.registry import registry

    for check in registry.get_checks():
        if Tags.urls in check.tags:
            continue
        for message in check(app_configs=None, databases=None):
            if message.is_serious():
                logging.getLogger(__name__).error("System check: %s", message)


# Collections of the youngest generation after this many container objects allocated and
# not freed (Python's default is 700). An engine batch allocates tens of thousands of rows,
# tuples and dicts that refcounting frees when the batch ends; at 700 the collector ran
# 2,800 times in a 50,000-contact engine run, for a fifth of the worker's Python time,
# finding next to nothing. Real cycles are still collected, each 20,000 allocations.
GC_YOUNGEST_THRESHOLD = 20_000


@worker_ready.connect
@worker_process_init.connect
def settle_garbage_collection(**kwargs):
    """Once a worker (or a prefork child) has imported everything it runs: move what is
    loaded now (modules, settings, the app's registry) out of the collector's sight for good
    (`gc.freeze`), so that full collections walk only what tasks allocate, and collect the
    youngest generation less often (GC_YOUNGEST_THRESHOLD). bench/engine.py times the
    engine the same way."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, older, oldest)
