"""config.settings.base refuses to start on settings that would run an insecure installation,
with a message naming the variable. Each case imports the settings in a process of its own, as
gunicorn, a Celery worker or manage.py would."""

import subprocess
import sys

import pytest

from tests.processes import BASE_DIR, base_env

DEVELOPMENT_KEY = "django-insecure-dev-only-secret-key-change-me-in-production"


def start_django(tmp_path, **variables) -> subprocess.CompletedProcess:
    # Its own VAR_DIR: a developer's var/secret-key.txt (bin/run's) must not count.
    env = base_env(DJANGO_SETTINGS_MODULE="config.settings.base", VAR_DIR=str(tmp_path))
    env.pop("DEBUG", None)
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "variables",
    [{}, {"DEBUG": "0"}, {"DEBUG": "0", "SECRET_KEY": ""}, {"SECRET_KEY": DEVELOPMENT_KEY}],
    ids=["nothing-set", "debug-off", "empty-key", "the-public-development-key"],
)
def test_refuses_to_start_with_debug_off_and_no_secret_key_of_its_own(tmp_path, variables):
    result = start_django(tmp_path, **variables)

    assert result.returncode != 0
    assert "started" not in result.stdout
    assert "ImproperlyConfigured: SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize(
    "variables",
    [{"DEBUG": "0", "SECRET_KEY": "a-real-key-" + "x" * 40}, {"DEBUG": "1"}],
    ids=["a-real-key", "development-with-debug-on"],
)
def test_starts_with_a_real_key_or_in_development(tmp_path, variables):
    result = start_django(tmp_path, **variables)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


def test_starts_with_the_key_bin_run_keeps_in_var_dir(tmp_path):
    # manage.py run by hand on a checkout that bin/run has set up signs with bin/run's key.
    (tmp_path / "secret-key.txt").write_text("bin-run-key-" + "y" * 40 + "\n")

    result = start_django(tmp_path, DEBUG="0")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", ["-1", "two"])
def test_refuses_a_trusted_proxy_count_that_is_not_a_count(tmp_path, value):
    result = start_django(tmp_path, SECRET_KEY="a-real-key-" + "x" * 40, TRUSTED_PROXY_COUNT=value)

    assert result.returncode != 0
    assert "TRUSTED_PROXY_COUNT" in result.stderr
