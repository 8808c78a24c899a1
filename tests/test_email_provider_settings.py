"""EMAIL_PROVIDER and ANYMAIL_* (docs/messages.md): a provider is a setting away, a name that
is not one refuses to start with a message naming the variable, and SMTP stays the default.
Each case imports the settings in a process of its own, as a worker would."""

import json
import subprocess
import sys

from tests.processes import BASE_DIR, base_env

SHOW = (
    "import django, json; django.setup(); from django.conf import settings; "
    "print(json.dumps([settings.EMAIL_BACKEND, settings.ANYMAIL]))"
)


def settings_with(tmp_path, **variables) -> subprocess.CompletedProcess:
    env = base_env(DJANGO_SETTINGS_MODULE="config.settings.base", VAR_DIR=str(tmp_path))
    env.update(DEBUG="1", **variables)
    for name in [n for n in env if n.startswith("ANYMAIL_") and n not in variables]:
        env.pop(name)
    env.pop("EMAIL_URL", None)
    if "EMAIL_PROVIDER" not in variables:
        env.pop("EMAIL_PROVIDER", None)
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_a_provider_and_its_keys_come_from_the_environment(tmp_path):
    result = settings_with(
        tmp_path,
        EMAIL_PROVIDER="Postmark",
        ANYMAIL_POSTMARK_SERVER_TOKEN="server-token",
        ANYMAIL_WEBHOOK_SECRET="old:pass,new:pass",
        ANYMAIL_IGNORE_UNSUPPORTED_FEATURES="true",
    )
    assert result.returncode == 0, result.stderr
    backend, anymail = json.loads(result.stdout.strip().splitlines()[-1])
    assert backend == "anymail.backends.postmark.EmailBackend"
    assert anymail == {
        "POSTMARK_SERVER_TOKEN": "server-token",
        "WEBHOOK_SECRET": ["old:pass", "new:pass"],
        "IGNORE_UNSUPPORTED_FEATURES": True,
    }


def test_an_unknown_provider_refuses_to_start_naming_the_variable(tmp_path):
    result = settings_with(tmp_path, EMAIL_PROVIDER="pigeon")
    assert result.returncode != 0
    assert "ImproperlyConfigured: EMAIL_PROVIDER='pigeon' is not a provider" in result.stderr


def test_without_a_provider_the_backend_stays_as_before(tmp_path):
    result = settings_with(tmp_path)
    assert result.returncode == 0, result.stderr
    backend, anymail = json.loads(result.stdout.strip().splitlines()[-1])
    assert backend == "django.core.mail.backends.console.EmailBackend"
    assert anymail == {}
