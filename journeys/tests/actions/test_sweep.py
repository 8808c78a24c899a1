"""journeys.actions.sweep: run_due does all due work in one process."""

import datetime

import pytest
from django.utils import timezone

from journeys.models import Enrollment
from journeys.tests.actions.scenarios import NURTURE_STEPS, PAID, send
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db


def test_run_due_command_processes_everything(capsys):
    from django.core.management import call_command

    live_journey(NURTURE_STEPS, conversions=[PAID])
    send(("e1", "ann", "signed_up"))
    call_command("run_due")
    assert (
        "Processed 1 events, advanced 1 enrollments, delivered 1 messages."
        in capsys.readouterr().out
    )
    assert Enrollment.objects.get().state == Enrollment.State.COMPLETED
    assert timezone.now() - Enrollment.objects.get().ended_at < datetime.timedelta(minutes=1)
