"""DEFAULT_TIMEZONE and MESSAGE_FREQUENCY_CAP are checked when Django starts, with a message
naming the variable (contract 6.1): a typo must not turn into a cap nobody asked for or into
every night read in UTC."""

import pytest

from tests.test_settings import start_django

DEVELOPMENT = {"DEBUG": "1"}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"DEFAULT_TIMEZONE": "Europe/Pariss"},
            "DEFAULT_TIMEZONE: Unknown time zone 'Europe/Pariss'",
        ),
        (
            {"MESSAGE_FREQUENCY_CAP": "3 a day"},
            "MESSAGE_FREQUENCY_CAP: Write the cap as COUNT/DURATION",
        ),
        (
            {"MESSAGE_FREQUENCY_CAP": "3/P1M"},
            "MESSAGE_FREQUENCY_CAP: The duration 'P1M' is not valid",
        ),
        ({"MESSAGE_FREQUENCY_CAP": "0/P1D"}, "MESSAGE_FREQUENCY_CAP: The count must be 1 or more"),
    ],
    ids=["unknown-zone", "cap-without-duration", "cap-in-months", "cap-of-zero"],
)
def test_refuses_to_start_with_a_bad_zone_or_cap(tmp_path, variables, message):
    result = start_django(tmp_path, **DEVELOPMENT, **variables)

    assert result.returncode != 0
    assert "started" not in result.stdout
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_starts_with_a_zone_and_a_cap(tmp_path):
    result = start_django(
        tmp_path, **DEVELOPMENT, DEFAULT_TIMEZONE="America/New_York", MESSAGE_FREQUENCY_CAP="3/P1D"
    )

    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout
