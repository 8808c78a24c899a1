"""API rate limits: a fixed-window counter per API key in Django's cache. Ingestion is
counted in events rather than requests, so one batch of 1,000 costs what 1,000 single posts
cost; contact reads and erasures are counted per call, each in a budget of its own, so a
leaked key can neither page through everyone's personal data nor erase it all at speed, and
neither budget eats into ingestion's.

The cache is shared by every process (Redis, or files on one machine; see CACHES in
settings), so the budget holds across web workers. Redis increments atomically; the file
cache does not, so concurrent batches on one machine may overshoot the budget slightly,
never refuse wrongly. If the cache itself fails the request is let through: ingestion
matters more than the limit.
"""

import dataclasses
import logging
import math
import re
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*s?\s*$")


@dataclasses.dataclass(frozen=True)
class Limit:
    events: int
    seconds: int


class RateLimited(Exception):
    def __init__(self, *, limit: Limit, retry_after: int, unit: str = "events"):
        self.limit = limit
        self.retry_after = retry_after
        self.unit = unit
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return (
            f"Rate limit exceeded: {self.limit.events} {self.unit} every {self.limit.seconds} s "
            f"per API key; retry after {self.retry_after} s."
        )


def parse_limit(text: str) -> Limit:
    """'100000/60s' -> Limit(100000, 60); '0/60s' switches the limit off."""
    match = _LIMIT_RE.match(text or "")
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"A rate limit reads like '100000/60s' (events/seconds), not {text!r}.")
    return Limit(events=int(match.group(1)), seconds=int(match.group(2)))


def spend(
    *,
    bucket: str,
    cost: int,
    limit: Limit | None = None,
    now: float | None = None,
    unit: str = "events",
):
    """Take `cost` from the bucket's budget for the current window, or raise RateLimited
    (taking nothing) when that would exceed it."""
    limit = limit or parse_limit(settings.INGEST_RATE_LIMIT)
    if limit.events == 0 or cost <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // limit.seconds)
    key = f"ratelimit:{bucket}:{limit.seconds}:{window}"
    try:
        cache.add(key, 0, timeout=limit.seconds + 1)
        used = cache.incr(key, cost)
        if used > limit.events:
            cache.decr(key, cost)
        else:
            return
    except Exception:
        logger.warning("Rate-limit cache unavailable; letting the request through", exc_info=True)
        return
    retry_after = max(1, math.ceil((window + 1) * limit.seconds - now))
    raise RateLimited(limit=limit, retry_after=retry_after, unit=unit)


def spend_ingest(*, api_key, events: int) -> None:
    """The ingestion budget of one API key (INGEST_RATE_LIMIT), in events."""
    spend(bucket=f"ingest:{api_key.key_hash[:24]}", cost=events)


def spend_contact_read(*, api_key) -> None:
    """One `GET /contacts/{id}` of one API key (CONTACTS_READ_RATE_LIMIT); unknown ids count
    too, since guessing ids is how a scraper would look for contacts."""
    spend(
        bucket=f"contact-read:{api_key.key_hash[:24]}",
        cost=1,
        limit=parse_limit(settings.CONTACTS_READ_RATE_LIMIT),
        unit="contact reads",
    )


def spend_contact_erasure(*, api_key) -> None:
    """One `DELETE /contacts/{id}` of one API key (CONTACTS_ERASE_RATE_LIMIT)."""
    spend(
        bucket=f"contact-erase:{api_key.key_hash[:24]}",
        cost=1,
        limit=parse_limit(settings.CONTACTS_ERASE_RATE_LIMIT),
        unit="contact erasures",
    )
