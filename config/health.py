"""`/healthz`: is this instance able to do its work, and is the work keeping up?

For load balancers and monitoring: no login, no session, never cached. It answers 200 when
the database and the broker answer and no due work has waited longer than
`HEALTH_MAX_DUE_SECONDS`, and 503 otherwise, always with the same JSON body. Failure details
go to the log, not into the public body (a database error can name hosts and users).
"""

import logging
import os

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

from journeys.selectors import due_work_ages

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("Health check: the database does not answer: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


def check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    transport = None
    try:
        if url.startswith("filesystem://"):
            transport = getattr(settings, "CELERY_BROKER_TRANSPORT", None)
            # Connecting to the filesystem transport always succeeds; what can break is the
            # folder the messages are written to.
            folder = options.get("data_folder_out", "")
            if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                raise OSError(f"broker folder {folder!r} is missing or not writable")
        with Connection(
            url,
            transport=transport,
            transport_options=options,
            connect_timeout=BROKER_TIMEOUT_SECONDS,
        ) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
            )
    except Exception as exc:
        logger.warning("Health check: the broker does not answer: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


@login_not_required
@never_cache
@require_GET
def healthz(request):
    database = check_database()
    broker = check_broker()
    due = {"events": None, "enrollments": None, "outbox": None}
    if database == "ok":
        try:
            due = due_work_ages(now=timezone.now())
        except Exception as exc:
            logger.warning("Health check: cannot read the due work: %s", exc)
            database = f"error: {type(exc).__name__}"
    oldest_due_seconds = None
    if database == "ok":
        oldest_due_seconds = max((age for age in due.values() if age is not None), default=0.0)
    late = oldest_due_seconds is not None and oldest_due_seconds > settings.HEALTH_MAX_DUE_SECONDS
    healthy = database == "ok" and broker == "ok" and not late
    body = {
        "status": "ok" if healthy else "fail",
        "database": database,
        "broker": broker,
        "oldest_due_seconds": oldest_due_seconds,
        "max_due_seconds": settings.HEALTH_MAX_DUE_SECONDS,
        "due": due,
    }
    return JsonResponse(body, status=200 if healthy else 503)
