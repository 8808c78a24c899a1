"""Tests run against DATABASE_URL (PostgreSQL in CI) or a throwaway SQLite file."""

import os

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# base refuses to start with DEBUG off and no key; processes a test starts inherit this one.
os.environ.setdefault("SECRET_KEY", "test-secret-key")

from .base import *  # noqa: F403
from .base import DATABASES, VAR_DIR

SECRET_KEY = "test-secret-key"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
SMS_BACKEND = "journeys.sms.LocmemSMSBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
if (
    DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    and "DATABASE_URL" not in os.environ
):
    DATABASES["default"]["NAME"] = str(VAR_DIR / "test.sqlite3")
    # One file per test run, so that several runs on one machine never share a database; a
    # file rather than memory because reliability tests start real worker processes.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("SQLITE_TEST_NAME", str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3"))
    }
