"""Contacts from a CSV file (docs/contract.md §6.3; docs/integrations.md, "CSV import").

Columns `external_id` (required), `email`, `timezone` (an IANA name, the contact's own
field), `subscription_email` and `subscription_sms` (the contact's consent on that channel),
`phone`, and any others, which become attributes (`phone` among them: the SMS step reads
the attribute). Rows are upserted by external id: a cell left empty changes nothing, the others are merged into the contact, and a contact whose
values are already those of its row is not written at all (no `updated_at` churn), so
importing the same file again changes nothing.

A whole-file error (empty, too large, not UTF-8, no `external_id` column, an unnamed or
repeated column) fails the import before any write, naming the line and byte where it can.
A bad row is refused with its line and reason and the rest go on. An external id that
appears on more than one line is refused on every one of them: which one the spreadsheet
meant is for a person to say.

Memory stays bounded whatever the file's length: the file is streamed (four passes: bytes
for the encoding, rows for the header, count and duplicate candidates, the candidates'
exact ids, then the import), duplicates are found with a fixed 16 MB bit set, and rows are
written in batches: on PostgreSQL COPY into a temporary table, then one INSERT ... ON
CONFLICT per batch; elsewhere bulk_create and bulk_update.
"""

import codecs
import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import time
import zoneinfo
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import F, Q

from journeys.bulk import claim
from journeys.definition import storable_text
from journeys.models import (
    SUBSCRIPTION_CHANNELS,
    Contact,
    ContactImport,
    ContactImportRefusal,
    Subscription,
    default_subscriptions,
)
from journeys.wakeups import wake

logger = logging.getLogger(__name__)

REQUIRED_COLUMN = "external_id"
# `subscription_email` and `subscription_sms` set the contact's consent on that channel
# (subscribed, unsubscribed, bounced, complained; empty: unchanged).
SUBSCRIPTION_COLUMNS = {f"subscription_{channel}": channel for channel in SUBSCRIPTION_CHANNELS}
KNOWN_COLUMNS = ("external_id", "email", "phone", "timezone", *SUBSCRIPTION_COLUMNS)
BATCH_SIZE = 5000
PREVIEW_ROWS = 5
_CHUNK = 1024 * 1024
# Duplicate candidates: one bit per hash bucket (2**27 bits, 16 MB). A 1 M-row file fills
# under 1% of it, so few rows are false candidates, and the second pass checks them exactly.
_BUCKET_BITS = 27


class ImportFileError(ValueError):
    """A file that cannot be imported at all; the message says why and where."""


@dataclasses.dataclass(frozen=True)
class Preview:
    columns: list[str]
    mapping: list[tuple[str, str]]  # (column, where it goes)
    rows: list[list[str]]


# --- Reading the file ------------------------------------------------------------------------


def _open_rows(path: str) -> Iterator[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as file:
        yield from csv.reader(file, strict=False)


def check_encoding(path: str, *, limit: int | None = None) -> None:
    """ImportFileError naming the line and byte of the first bytes that are not UTF-8; reads
    at most `limit` bytes (all of them by default), a megabyte at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    lines = 1
    with open(path, "rb") as file:
        while limit is None or offset < limit:
            chunk = file.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # The decoder may hold back up to three bytes of an unfinished character.
                held = len(exc.object) - len(chunk)
                bad = offset - held + exc.start
                line = lines + exc.object[: exc.start].count(b"\n")
                raise ImportFileError(
                    f"The file is not UTF-8: byte 0x{exc.object[exc.start]:02X} at line {line}"
                    f" (byte {bad + 1}) cannot be read. Save the file as 'CSV UTF-8' and try "
                    "again."
                ) from None
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def _columns(header: list[str]) -> list[str]:
    columns = [name.strip() for name in header]
    columns = [name.lower() if name.lower() in KNOWN_COLUMNS else name for name in columns]
    for index, name in enumerate(columns, start=1):
        if not name:
            raise ImportFileError(f"Column {index} of the header (line 1) has no name.")
        if not storable_text(name):
            raise ImportFileError(f"Column {index} of the header contains a NUL character.")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ImportFileError(f"The header repeats the column(s) {', '.join(repeated)}.")
    if REQUIRED_COLUMN not in columns:
        raise ImportFileError(
            f"The file has no '{REQUIRED_COLUMN}' column (line 1 has: "
            f"{', '.join(columns)}). The first line must name the columns."
        )
    return columns


def _check_size(path: str, size: int) -> None:
    if size == 0:
        raise ImportFileError("The file is empty.")
    if size > settings.CONTACT_IMPORT_MAX_BYTES:
        raise ImportFileError(
            f"The file is {size:,} bytes; at most {settings.CONTACT_IMPORT_MAX_BYTES:,} can be "
            "imported at once. Split it into smaller files."
        )


def _destination(column: str) -> str:
    if column == "external_id":
        return "the contact's external id (rows are matched by it)"
    if column == "email":
        return "the contact's email"
    return f"attribute '{column}'"


def inspect_csv(*, path: str, size: int) -> Preview:
    """The header checked, and the first rows with where each column goes, for the page to
    show before anything is imported. Checks the encoding of the first megabytes only: the
    import checks the whole file before it writes."""
    _check_size(path, size)
    check_encoding(path, limit=4 * _CHUNK)
    try:
        rows = _open_rows(path)
        header = next(rows, None)
        if header is None:
            raise ImportFileError("The file is empty.")
        columns = _columns(header)
        preview = []
        for cells in rows:
            if len(preview) == PREVIEW_ROWS:
                break
            if cells:
                preview.append(cells)
    except UnicodeDecodeError:
        check_encoding(path)
        raise
    except csv.Error as exc:
        raise ImportFileError(f"The file is not CSV that can be read: {exc}.") from None
    return Preview(
        columns=columns,
        mapping=[(column, _destination(column)) for column in columns],
        rows=preview,
    )


# --- Rows ------------------------------------------------------------------------------------


def _timezones() -> set[str]:
    return zoneinfo.available_timezones()


def parse_row(cells: list[str], columns: list[str], zones: set[str]) -> tuple[dict | None, str]:
    """The row as {"external_id", "email", "attributes"}, or None and why not."""
    if len(cells) != len(columns):
        return None, f"The row has {len(cells)} cells where the header has {len(columns)}."
    values = {column: cell.strip() for column, cell in zip(columns, cells, strict=True)}
    external_id = values.pop("external_id")
    if not external_id:
        return None, "external_id is empty."
    if len(external_id) > 255:
        return None, "external_id is longer than 255 characters."
    # Text decoded as strict UTF-8 holds no lone surrogates: NUL is all that cannot be stored.
    if any("\x00" in cell for cell in cells):
        return None, "The row contains a NUL character, which cannot be stored."
    email = values.pop("email", "")
    if email:
        try:
            if len(email) > 254:
                raise ValidationError("too long")
            validate_email(email)
        except ValidationError:
            return None, f"email '{email[:100]}' is not a valid email address."
    zone = values.pop("timezone", "")
    if zone and zone not in zones:
        return None, f"timezone '{zone[:100]}' is not an IANA time zone name (e.g. Europe/Paris)."
    subscriptions = {}
    for column, channel in SUBSCRIPTION_COLUMNS.items():
        status = values.pop(column, "").lower()
        if status and status not in Subscription.values:
            return None, (
                f"{column} '{status[:100]}' is not one of {', '.join(Subscription.values)}."
            )
        if status:
            subscriptions[channel] = status
    attributes = {column: value for column, value in values.items() if value != ""}
    row = {"external_id": external_id, "email": email, "timezone": zone}
    return {**row, "subscriptions": subscriptions, "attributes": attributes}, ""


def _bucket(external_id: str) -> int:
    return hash(external_id) & ((1 << _BUCKET_BITS) - 1)


def scan_file(path: str) -> tuple[list[str], int, dict[str, list[int]]]:
    """Everything checked before the first write: the encoding of the whole file, the
    header, the number of data rows, and the external ids on more than one line (with their
    lines). Raises ImportFileError."""
    _check_size(path, os.path.getsize(path))
    check_encoding(path)
    reader = _Reader(path)
    try:
        columns = reader.columns()
        index = columns.index(REQUIRED_COLUMN)
        seen = bytearray(1 << (_BUCKET_BITS - 3))
        candidates: set[int] = set()
        total = 0
        for _, cells in reader.rows():
            total += 1
            if len(cells) <= index:
                continue
            bucket = _bucket(cells[index].strip())
            byte, bit = bucket >> 3, 1 << (bucket & 7)
            if seen[byte] & bit:
                candidates.add(bucket)
            seen[byte] |= bit
        del seen
        lines: dict[str, list[int]] = {}
        if candidates:
            reader = _Reader(path)
            reader.columns()
            for line, cells in reader.rows():
                if len(cells) > index:
                    external_id = cells[index].strip()
                    if external_id and _bucket(external_id) in candidates:
                        lines.setdefault(external_id, []).append(line)
    except csv.Error as exc:
        raise ImportFileError(f"The file is not CSV that can be read: {exc}.") from None
    return columns, total, {key: found for key, found in lines.items() if len(found) > 1}


class _Reader:
    """The file's rows with the line each starts on."""

    def __init__(self, path: str):
        self.file = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below)
        self.reader = csv.reader(self.file, strict=False)

    def columns(self) -> list[str]:
        header = next(self.reader, None)
        if header is None:
            self.file.close()
            raise ImportFileError("The file is empty.")
        return _columns(header)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line, cells) of each data row, blank lines included (as []), so that row counts
        match between passes."""
        try:
            while True:
                line = self.reader.line_num + 1
                try:
                    cells = next(self.reader)
                except StopIteration:
                    return
                yield line, cells
        finally:
            self.file.close()


# --- Work items ------------------------------------------------------------------------------


def create_contact_import(
    *, path: str, file_name: str, size: int, user=None, start: bool = False
) -> ContactImport:
    """A new import of the file at `path` (already checked by `inspect_csv`): a draft, or
    with `start`, pending and a worker woken. Locks nothing (a new row). Safe to run twice:
    it makes a second import of the same file, which changes nothing more."""
    with transaction.atomic():
        contact_import = ContactImport.objects.create(
            path=path,
            file_name=file_name[:255],
            size=size,
            created_by=user,
            status=ContactImport.Status.PENDING if start else ContactImport.Status.DRAFT,
        )
        if start:
            wake("import_contacts")
    return contact_import


def start_contact_import(*, contact_import: ContactImport) -> bool:
    """Hand a draft to the workers; returns whether it was a draft. Locks the import's row
    (the UPDATE). Safe to run twice: a started import is not a draft any more."""
    with transaction.atomic():
        started = ContactImport.objects.filter(
            pk=contact_import.pk, status=ContactImport.Status.DRAFT
        ).update(status=ContactImport.Status.PENDING)
        if started:
            wake("import_contacts")
    return bool(started)


def claim_draft_import(*, contact_import: ContactImport, now: datetime) -> bool:
    """Take a draft to run in this process (`manage.py import_contacts`) rather than on a
    worker: running, leased, its first attempt. Locks the import's row (the UPDATE). Safe to
    run twice: only a draft is taken."""
    with transaction.atomic():
        taken = ContactImport.objects.filter(
            pk=contact_import.pk, status=ContactImport.Status.DRAFT
        ).update(
            status=ContactImport.Status.RUNNING,
            attempts=F("attempts") + 1,
            leased_until=_lease(now),
            started_at=now,
        )
    contact_import.refresh_from_db()
    return bool(taken)


def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)


def run_pending_import(*, now: datetime) -> ContactImport | None:
    """Claim one pending import (or one whose worker's lease ran out) and run it here;
    returns it, or None when there was none. The claim locks its row FOR UPDATE SKIP LOCKED
    for one short transaction; see `run_contact_import` for the rest. Safe to run twice and
    alongside other workers: a claimed import is leased, and a resumed one goes on from its
    last committed batch."""
    with transaction.atomic():
        due = claim(
            ContactImport.objects.filter(
                Q(status=ContactImport.Status.PENDING)
                | Q(status=ContactImport.Status.RUNNING, leased_until__lt=now)
            ).order_by("pk"),
            1,
        )
        if not due:
            return None
        contact_import = due[0]
        contact_import.status = ContactImport.Status.RUNNING
        contact_import.attempts += 1
        contact_import.leased_until = _lease(now)
        contact_import.started_at = contact_import.started_at or now
        contact_import.save(update_fields=["status", "attempts", "leased_until", "started_at"])
    if contact_import.attempts > settings.ENGINE_MAX_ATTEMPTS:
        _finish(contact_import, now=now, error="The import stopped too many times; start it again.")
        return contact_import
    run_contact_import(contact_import=contact_import, now=now)
    return contact_import


def run_contact_import(*, contact_import: ContactImport, now: datetime) -> ContactImport:
    """Import a claimed (running, leased) import's file: scan it whole (`scan_file`), then
    write its rows a batch at a time, each batch in one transaction with the import's counts
    and progress, so a worker that dies loses at most a batch, and the next one resumes after
    the last committed batch. An unexpected error fails the import with its message (the rows
    already written stay: each is a valid upsert on its own).

    Locks: the contact rows of a batch (the upsert), then the import's row. Contact rows are
    written in external id order, so two imports never wait for each other in a circle; an
    erased contact is never written. Safe to run twice: rows already handled are skipped, and
    an upsert that finds its values in place writes nothing."""
    started = time.monotonic()
    try:
        columns, total, duplicates = scan_file(contact_import.path)
    except (ImportFileError, OSError) as exc:
        message = (
            str(exc) if isinstance(exc, ImportFileError) else f"The file cannot be read: {exc}"
        )
        return _finish(contact_import, now=now, error=message)
    ContactImport.objects.filter(pk=contact_import.pk).update(rows_total=total)
    contact_import.rows_total = total
    zones = _timezones()
    reader = _Reader(contact_import.path)
    reader.columns()
    skip = contact_import.rows_done
    good: list[dict] = []
    refused: list[ContactImportRefusal] = []
    handled = 0
    try:
        for line, cells in reader.rows():
            if skip:
                skip -= 1
                continue
            handled += 1
            if cells:
                row, reason = parse_row(cells, columns, zones)
                if row is not None and row["external_id"] in duplicates:
                    found = ", ".join(map(str, duplicates[row["external_id"]][:10]))
                    row, reason = (
                        None,
                        (
                            f"external_id '{row['external_id'][:100]}' is on more than one line "
                            f"({found}): none of them is imported."
                        ),
                    )
                if row is None:
                    refused.append(_refusal(contact_import, line, cells, columns, reason))
                else:
                    good.append(row)
            if len(good) + len(refused) >= BATCH_SIZE:
                moment = now + timedelta(seconds=time.monotonic() - started)
                if not _commit_batch(contact_import, good, refused, handled, now=moment):
                    return contact_import
                good, refused, handled = [], [], 0
        moment = now + timedelta(seconds=time.monotonic() - started)
        if not _commit_batch(contact_import, good, refused, handled, now=moment):
            return contact_import
    except Exception as exc:
        logger.exception("Contact import %s failed", contact_import.pk)
        return _finish(contact_import, now=now, error=f"The import stopped: {exc}")
    return _finish(contact_import, now=now + timedelta(seconds=time.monotonic() - started))


def _refusal(contact_import, line, cells, columns, reason) -> ContactImportRefusal:
    external_id = ""
    index = columns.index(REQUIRED_COLUMN)
    if len(cells) > index and storable_text(cells[index]):
        external_id = cells[index].strip()[:255]
    return ContactImportRefusal(
        contact_import=contact_import, line=line, external_id=external_id, reason=reason
    )


def _commit_batch(contact_import, good, refused, handled, *, now: datetime) -> bool:
    """One batch, its refusals and the import's counts in one transaction; False (and
    nothing written) when the import is no longer this worker's (its lease ran out and
    another worker took it over)."""
    with transaction.atomic():
        mine = ContactImport.objects.select_for_update().filter(
            pk=contact_import.pk,
            status=ContactImport.Status.RUNNING,
            attempts=contact_import.attempts,
        )
        # The import's row last: the lock order is contacts first, everywhere.
        created, updated = upsert_contacts(rows=good, now=now) if good else (0, 0)
        if not mine.exists():
            transaction.set_rollback(True)
            return False
        ContactImportRefusal.objects.bulk_create(refused)
        mine.update(
            rows_done=F("rows_done") + handled,
            created_count=F("created_count") + created,
            updated_count=F("updated_count") + updated,
            unchanged_count=F("unchanged_count") + len(good) - created - updated,
            refused_count=F("refused_count") + len(refused),
            leased_until=_lease(now),
        )
    return True


def _finish(contact_import: ContactImport, *, now: datetime, error: str = "") -> ContactImport:
    _remove_upload(contact_import.path)
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ContactImport.Status.FAILED if error else ContactImport.Status.DONE,
        error=error,
        finished_at=now,
        leased_until=None,
    )
    contact_import.refresh_from_db()
    return contact_import


def _remove_upload(path: str) -> None:
    """An uploaded file is not needed once its import is over (the refused rows are in the
    database); a file the command was given is the user's own and stays."""
    folder = os.path.realpath(settings.CONTACT_IMPORT_DIR)
    if os.path.dirname(os.path.realpath(path)) == folder:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


# --- The upsert ------------------------------------------------------------------------------


def upsert_contacts(*, rows: list[dict], now: datetime) -> tuple[int, int]:
    """Create or update contacts by external id (each row {"external_id", "email",
    "timezone", "attributes"}; an empty email or timezone keeps the stored one, attributes
    are merged in); returns
    (created, updated). A contact whose values already are the row's is not written, and an
    erased one never. Runs in the caller's transaction (`_commit_batch`). Locks the contact
    rows it writes, in external id order."""
    rows = sorted(rows, key=lambda row: row["external_id"])
    if connection.vendor == "postgresql":
        return _upsert_copy(rows, now)
    return _upsert_bulk(rows, now)


_TEMP_TABLE = "waypoint_contact_import_rows"


def _upsert_copy(rows: list[dict], now: datetime) -> tuple[int, int]:
    table = connection.ops.quote_name(Contact._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP_TABLE} "
            "(external_id text, email text, timezone text, subscriptions jsonb,"
            " attributes jsonb) ON COMMIT DELETE ROWS"
        )
        with cursor.cursor.copy(
            f"COPY {_TEMP_TABLE} (external_id, email, timezone, subscriptions, attributes)"
            " FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(
                    (
                        row["external_id"],
                        row["email"],
                        row["timezone"],
                        json.dumps(row.get("subscriptions") or {}),
                        json.dumps(row["attributes"]),
                    )
                )
        cursor.execute(
            f"INSERT INTO {table} AS c"
            " (external_id, email, timezone, subscriptions, attributes, created_at, updated_at)"
            " SELECT external_id, email, timezone, %s::jsonb || subscriptions, attributes, %s, %s"
            f" FROM {_TEMP_TABLE} ORDER BY external_id"
            " ON CONFLICT (external_id) DO UPDATE SET"
            " email = CASE WHEN excluded.email = '' THEN c.email ELSE excluded.email END,"
            " timezone = CASE WHEN excluded.timezone = '' THEN c.timezone"
            " ELSE excluded.timezone END,"
            " subscriptions = c.subscriptions || excluded.subscriptions,"
            " attributes = c.attributes || excluded.attributes,"
            " updated_at = excluded.updated_at"
            " WHERE c.erased_at IS NULL AND ("
            "  (excluded.email <> '' AND excluded.email <> c.email)"
            "  OR (excluded.timezone <> '' AND excluded.timezone <> c.timezone)"
            "  OR NOT c.subscriptions @> excluded.subscriptions"
            "  OR NOT c.attributes @> excluded.attributes)"
            " RETURNING (xmax = 0)",
            [json.dumps(default_subscriptions()), now, now],
        )
        results = [inserted for (inserted,) in cursor.fetchall()]
    created = sum(results)
    return created, len(results) - created


def _upsert_bulk(rows: list[dict], now: datetime) -> tuple[int, int]:
    existing = {
        contact.external_id: contact
        for contact in Contact.objects.filter(external_id__in=[row["external_id"] for row in rows])
    }
    new, changed = [], []
    for row in rows:
        contact = existing.get(row["external_id"])
        if contact is None:
            new.append(
                Contact(
                    external_id=row["external_id"],
                    email=row["email"],
                    timezone=row["timezone"],
                    subscriptions={**default_subscriptions(), **row.get("subscriptions", {})},
                    attributes=row["attributes"],
                    created_at=now,
                    updated_at=now,
                )
            )
            continue
        if contact.erased_at is not None:
            continue
        email = row["email"] or contact.email
        zone = row["timezone"] or contact.timezone
        subscriptions = {**(contact.subscriptions or {}), **row.get("subscriptions", {})}
        attributes = {**(contact.attributes or {}), **row["attributes"]}
        new_values = (email, zone, subscriptions, attributes)
        if new_values != (
            contact.email,
            contact.timezone,
            contact.subscriptions,
            contact.attributes,
        ):
            contact.email, contact.timezone, contact.subscriptions, contact.attributes = new_values
            contact.updated_at = now
            changed.append(contact)
    Contact.objects.bulk_create(new)
    Contact.objects.bulk_update(
        changed, ["email", "timezone", "subscriptions", "attributes", "updated_at"]
    )
    return len(new), len(changed)


# --- The report ------------------------------------------------------------------------------


def _spreadsheet_safe(text: str) -> str:
    # A cell a spreadsheet would run as a formula gets a leading quote (as report.csv does).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def refused_rows_csv(contact_import: ContactImport) -> Iterator[str]:
    """The refused rows as CSV text (line, external_id, reason), streamed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["line", "external_id", "reason"])
    yield buffer.getvalue()
    refusals = contact_import.refusals.order_by("line").values_list("line", "external_id", "reason")
    for line, external_id, reason in refusals.iterator(chunk_size=2000):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([line, _spreadsheet_safe(external_id), _spreadsheet_safe(reason)])
        yield buffer.getvalue()
