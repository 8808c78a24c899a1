"""Fixtures of the contract suite."""

import pytest

from tests.contract.public_surface import START


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine
