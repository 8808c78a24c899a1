import dataclasses

import pytest
from aiosmtpd.controller import Controller

from tests.processes import free_port


@dataclasses.dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


class _Inbox:
    def __init__(self):
        self.messages: list[Received] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on a free port (aiosmtpd), with Django's SMTP backend pointed at
    it; `.messages` holds what arrived, as raw bytes."""
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield inbox
    finally:
        controller.stop()
