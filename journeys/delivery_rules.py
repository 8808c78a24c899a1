"""When a marketing message may go out: quiet hours and the frequency cap (contract 6.1).

Pure: no ORM, no settings, no clock. `journeys.actions.messages` asks these rules right
before it marks a message as being sent; the settings module parses the cap at start.
Transactional messages (a receipt, a password reset) are asked nothing: they neither wait
for the morning nor count towards a cap.
"""

import dataclasses
import datetime
import functools
import re
import zoneinfo

from journeys.definition import parse_clock, parse_duration

MARKETING = "marketing"

_CAP_RE = re.compile(r"^\s*([0-9]+)\s*/\s*(\S+)\s*\Z")


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_or_default(name: str, default: str) -> zoneinfo.ZoneInfo:
    """The contact's zone, or the default one when it has none (or one no longer known:
    a zone database update may drop a name that was valid when stored)."""
    return zoneinfo.ZoneInfo(name if name in _zone_names() else default)


def check_timezone(name: str) -> str:
    """The IANA zone name itself; ValueError naming the problem otherwise. Only names the
    system's zone database lists: `ZoneInfo` alone also opens paths and legacy aliases."""
    if name not in _zone_names():
        raise ValueError(f"Unknown time zone '{name}': use an IANA name such as Europe/Paris")
    return name


@dataclasses.dataclass(frozen=True)
class QuietHours:
    start: datetime.time
    end: datetime.time

    @classmethod
    def from_setting(cls, setting: dict | None) -> "QuietHours | None":
        """The window of a journey's `settings.quiet_hours` (validated when the journey was
        saved), None when the journey has none."""
        if not setting:
            return None
        return cls(parse_clock(setting["start"]), parse_clock(setting["end"]))

    def covers(self, clock: datetime.time) -> bool:
        # Half-open, [start, end): a message due at the end goes out then.
        if self.start < self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end


def quiet_until(
    now: datetime.datetime, tz: zoneinfo.ZoneInfo, window: QuietHours | None
) -> datetime.datetime | None:
    """The instant (UTC) the quiet window that `now` falls in ends, read in `tz`; None when
    `now` is outside it. A window may cross midnight (21:00 to 08:00).

    Daylight saving: the window is wall-clock time in the contact's zone, so 08:00 is
    08:00 local on either side of a change. An end the clocks jump over (02:30 on a
    spring-forward night) is read with the offset before the jump, which lands as long
    after the jump as the end lay after its start (03:30), as java.time and PEP 495 do.
    An end the clocks pass twice (an autumn night) is the first pass still ahead of `now`:
    the window ends the first time the clock reads it, and a message due in the repeated
    hour before it waits for the second.
    """
    if window is None:
        return None
    local = now.astimezone(tz)
    if not window.covers(local.time().replace(tzinfo=None)):
        return None
    day = local.date()
    if window.start >= window.end and local.time() >= window.start:
        day += datetime.timedelta(days=1)
    for fold in (0, 1):
        end = datetime.datetime.combine(day, window.end, tzinfo=tz).replace(fold=fold)
        if end.astimezone(datetime.UTC) > now:
            return end.astimezone(datetime.UTC)
    return None  # pragma: no cover - the end of a window `now` is in lies ahead of it


@dataclasses.dataclass(frozen=True)
class FrequencyCap:
    """At most `count` marketing messages per contact and channel in any trailing `period`."""

    count: int
    period: datetime.timedelta
    text: str

    def allows(self, *, sent_in_period: int) -> bool:
        return sent_in_period < self.count


def parse_frequency_cap(text: str) -> FrequencyCap | None:
    """`N/ISO-duration` (e.g. `3/P1D`, `1/PT12H`); None for an empty setting (no cap);
    ValueError with the reason otherwise."""
    if not text or not text.strip():
        return None
    match = _CAP_RE.match(text)
    if not match:
        raise ValueError(
            f"Write the cap as COUNT/DURATION, e.g. 3/P1D (3 a day) or 1/PT12H, not '{text}'"
        )
    count = int(match[1])
    if count < 1:
        raise ValueError(f"The count must be 1 or more (leave it empty for no cap), not {count}")
    try:
        period = parse_duration(match[2])
    except ValueError as exc:
        raise ValueError(f"The duration '{match[2]}' is not valid: {exc}") from None
    return FrequencyCap(count=count, period=period, text=text.strip())
