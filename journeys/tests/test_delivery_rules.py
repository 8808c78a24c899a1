"""journeys.delivery_rules: the end of a quiet window in the contact's zone, across daylight
saving changes, and the frequency cap's setting."""

import datetime
from zoneinfo import ZoneInfo

import pytest

from journeys.delivery_rules import (
    QuietHours,
    check_timezone,
    parse_frequency_cap,
    quiet_until,
    zone_or_default,
)

UTC = datetime.UTC
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours.from_setting({"start": "21:00", "end": "08:00"})


def at(zone, *parts, fold=0):
    return datetime.datetime(*parts, tzinfo=zone).replace(fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "due", "until_utc"),
    [
        # Paris springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST): 08:00 is 06:00 UTC.
        (PARIS, (2026, 3, 27, 22, 30), datetime.datetime(2026, 3, 28, 7, 0, tzinfo=UTC)),
        (PARIS, (2026, 3, 28, 22, 30), datetime.datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
        (PARIS, (2026, 3, 29, 22, 30), datetime.datetime(2026, 3, 30, 6, 0, tzinfo=UTC)),
        # ...and falls back on 2026-10-25 (03:00 CEST -> 02:00 CET): 08:00 is 07:00 UTC.
        (PARIS, (2026, 10, 23, 22, 30), datetime.datetime(2026, 10, 24, 6, 0, tzinfo=UTC)),
        (PARIS, (2026, 10, 24, 22, 30), datetime.datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),
        (PARIS, (2026, 10, 25, 22, 30), datetime.datetime(2026, 10, 26, 7, 0, tzinfo=UTC)),
        # New York changes on 2026-03-08 and 2026-11-01.
        (NEW_YORK, (2026, 3, 7, 22, 30), datetime.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        (NEW_YORK, (2026, 3, 8, 22, 30), datetime.datetime(2026, 3, 9, 12, 0, tzinfo=UTC)),
        (NEW_YORK, (2026, 10, 31, 22, 30), datetime.datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        (NEW_YORK, (2026, 11, 1, 22, 30), datetime.datetime(2026, 11, 2, 13, 0, tzinfo=UTC)),
    ],
)
def test_a_message_due_at_22_30_waits_for_08_00_local_the_next_day(zone, due, until_utc):
    until = quiet_until(at(zone, *due), zone, NIGHT)

    assert until == until_utc
    assert until.astimezone(zone).strftime("%H:%M") == "08:00"


def test_a_window_crossing_midnight_holds_after_midnight_until_the_same_morning():
    assert quiet_until(at(PARIS, 2026, 3, 29, 1, 30), PARIS, NIGHT) == at(PARIS, 2026, 3, 29, 8)
    assert quiet_until(at(PARIS, 2026, 3, 29, 7, 59), PARIS, NIGHT) == at(PARIS, 2026, 3, 29, 8)
    assert quiet_until(at(PARIS, 2026, 3, 29, 21, 0), PARIS, NIGHT) == at(PARIS, 2026, 3, 30, 8)


@pytest.mark.parametrize("clock", [(8, 0), (12, 0), (20, 59)])
def test_outside_the_window_nothing_waits(clock):
    assert quiet_until(at(PARIS, 2026, 3, 29, *clock), PARIS, NIGHT) is None
    assert quiet_until(at(PARIS, 2026, 3, 29, *clock), PARIS, None) is None


def test_a_window_within_one_day():
    lunch = QuietHours.from_setting({"start": "12:00", "end": "14:00"})

    assert quiet_until(at(NEW_YORK, 2026, 6, 1, 12, 0), NEW_YORK, lunch) == at(
        NEW_YORK, 2026, 6, 1, 14
    )
    assert quiet_until(at(NEW_YORK, 2026, 6, 1, 11, 59), NEW_YORK, lunch) is None
    assert quiet_until(at(NEW_YORK, 2026, 6, 1, 14, 0), NEW_YORK, lunch) is None


def test_the_window_is_read_in_the_contacts_zone_not_utc():
    # 22:30 UTC is 23:30 in Paris (inside) and 17:30 in New York (outside).
    now = datetime.datetime(2026, 1, 10, 22, 30, tzinfo=UTC)

    assert quiet_until(now, PARIS, NIGHT) == datetime.datetime(2026, 1, 11, 7, 0, tzinfo=UTC)
    assert quiet_until(now, NEW_YORK, NIGHT) is None


def test_an_end_the_clocks_jump_over_lands_as_far_after_the_jump():
    # 2026-03-29 in Paris has no 02:00-02:59: an end at 02:30 is read as 03:30 CEST,
    # and one at 02:00 as the jump itself (03:00 CEST).
    for end, expected in (("02:30", (3, 30)), ("02:00", (3, 0))):
        window = QuietHours.from_setting({"start": "23:00", "end": end})
        until = quiet_until(at(PARIS, 2026, 3, 28, 23, 30), PARIS, window)
        assert until.astimezone(PARIS).timetuple()[3:5] == expected
        assert until.astimezone(PARIS).utcoffset() == datetime.timedelta(hours=2)


def test_an_end_the_clocks_pass_twice_is_the_first_pass_ahead():
    # 2026-10-25 in Paris shows 02:00-02:59 twice, first in CEST (+2) then in CET (+1).
    window = QuietHours.from_setting({"start": "23:00", "end": "02:30"})
    first = datetime.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET

    assert quiet_until(at(PARIS, 2026, 10, 24, 23, 30), PARIS, window) == first
    # 02:10 CET, the repeated hour: by the wall clock still inside, until the second 02:30.
    assert quiet_until(at(PARIS, 2026, 10, 25, 2, 10, fold=1), PARIS, window) == second
    assert quiet_until(second, PARIS, window) is None


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("3/P1D", 3, datetime.timedelta(days=1)),
        (" 1 / PT12H ", 1, datetime.timedelta(hours=12)),
        ("10/P1W", 10, datetime.timedelta(weeks=1)),
    ],
)
def test_the_frequency_cap_setting_reads_count_and_duration(text, count, period):
    cap = parse_frequency_cap(text)

    assert (cap.count, cap.period) == (count, period)
    assert cap.allows(sent_in_period=count - 1)
    assert not cap.allows(sent_in_period=count)


def test_an_empty_frequency_cap_means_no_cap():
    assert parse_frequency_cap("") is None
    assert parse_frequency_cap("  ") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3", "COUNT/DURATION"),
        ("three/P1D", "COUNT/DURATION"),
        ("0/P1D", "must be 1 or more"),
        ("3/1D", "'1D' is not valid"),
        ("3/P1M", "months or years"),
    ],
)
def test_a_bad_frequency_cap_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_frequency_cap(text)


def test_only_iana_zone_names_are_timezones():
    assert check_timezone("Europe/Paris") == "Europe/Paris"
    for name in ("Mars/Olympus", "", "/etc/localtime", "europe/paris"):
        with pytest.raises(ValueError, match="Unknown time zone"):
            check_timezone(name)


def test_a_contact_without_a_known_zone_gets_the_default():
    assert zone_or_default("", "Europe/Paris").key == "Europe/Paris"
    assert zone_or_default("Gone/Zone", "UTC").key == "UTC"
    assert zone_or_default("America/New_York", "UTC").key == "America/New_York"
