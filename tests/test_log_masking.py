"""Email addresses are masked in the logs of every process, Celery's included: a worker and
beat replace the root logger's handlers (and with them Django's LOGGING and its masking filter)
by their own."""

import subprocess
import sys

from tests.processes import BASE_DIR, Processes, base_env, wait_until

CELERY_LOGGING = """
import logging
from celery.utils.log import get_task_logger
from config.celery import app

# What a worker and beat do at start: Celery's handlers on the root and task loggers, and
# stdout (where the console email backend writes) redirected to a logger.
app.log.setup(loglevel="INFO", redirect_stdouts=True)
logging.getLogger("journeys.actions").warning("Bounce from %s", "ann@example.com")
get_task_logger("journeys.tasks").warning("Sent to bob@example.com")
print("To: cat%40example.com")
"""


def celery_env(tmp_path) -> dict:
    return base_env(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        SECRET_KEY="log-test-secret-key-" + "x" * 40,
        VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )


def test_celery_logging_masks_emails_in_log_task_log_and_stdout(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CELERY_LOGGING],
        cwd=BASE_DIR,
        env=celery_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for masked in ("Bounce from a***@example.com", "Sent to b***@example.com", "c***@example.com"):
        assert masked in output, output
    for address in ("ann@example.com", "bob@example.com", "cat%40example.com"):
        assert address not in output, output


def test_a_real_worker_masks_emails_in_its_log_lines(tmp_path):
    processes = Processes(celery_env(tmp_path), tmp_path)
    # Its node name is shaped like an address, and the worker logs it once ready.
    processes.start(
        "worker",
        "celery -A config worker --pool=solo --loglevel INFO --hostname ann@example.com "
        "--without-gossip --without-mingle --without-heartbeat",
    )
    try:
        wait_until(lambda: " ready." in processes.log("worker"), 60, "the worker", processes)
    finally:
        processes.stop()
    ready = [line for line in processes.log("worker").splitlines() if " ready." in line]
    assert ready and all("a***@example.com ready." in line for line in ready), ready
