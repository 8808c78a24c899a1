"""SMS backends, chosen by dotted path in `settings.SMS_BACKEND`, like Django's email ones.

A provider's backend subclasses BaseSMSBackend and implements `send`; it raises on failure,
and the outbox retries the message.
"""

import sys
import threading

from django.conf import settings
from django.utils.module_loading import import_string

# What LocmemSMSBackend sent, for tests: dicts of "to" and "text".
outbox: list[dict] = []
_outbox_lock = threading.Lock()


class BaseSMSBackend:
    def send(self, *, to: str, text: str) -> None:
        raise NotImplementedError


class ConsoleSMSBackend(BaseSMSBackend):
    """Prints each message, for development."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def send(self, *, to: str, text: str) -> None:
        self.stream.write(f"SMS to {to}: {text}\n")
        self.stream.flush()


class LocmemSMSBackend(BaseSMSBackend):
    """Keeps messages in `journeys.sms.outbox`, for tests."""

    def send(self, *, to: str, text: str) -> None:
        with _outbox_lock:
            outbox.append({"to": to, "text": text})


def get_sms_backend(path: str | None = None) -> BaseSMSBackend:
    return import_string(path or settings.SMS_BACKEND)()
