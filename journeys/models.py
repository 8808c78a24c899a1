from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from journeys.delivery_rules import check_timezone


def validate_timezone(value: str) -> None:
    try:
        check_timezone(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Subscription(models.TextChoices):
    """A contact's consent on one channel (docs/messages.md): only `subscribed` receives
    marketing messages."""

    SUBSCRIBED = "subscribed", "Subscribed"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    BOUNCED = "bounced", "Bounced"
    COMPLAINED = "complained", "Complained"


SUBSCRIPTION_CHANNELS = ("email", "sms")


def default_subscriptions() -> dict:
    return dict.fromkeys(SUBSCRIPTION_CHANNELS, Subscription.SUBSCRIBED.value)


def subscription_problems(value: object) -> list[tuple[list[str], str]]:
    """What is wrong with a subscriptions mapping, each with the key it is about; empty when
    it is valid. Partial mappings are valid: the API and forms change only what they name."""
    if not isinstance(value, dict):
        return [([], "Must be an object of channel: status")]
    problems = []
    for channel, status in value.items():
        if channel not in SUBSCRIPTION_CHANNELS:
            problems.append(
                ([str(channel)], f"Unknown channel; use one of: {', '.join(SUBSCRIPTION_CHANNELS)}")
            )
        elif status not in Subscription.values:
            problems.append(
                ([channel], f"Unknown status; use one of: {', '.join(Subscription.values)}")
            )
    return problems


def validate_subscriptions(value: object) -> None:
    problems = subscription_problems(value)
    if problems:
        raise ValidationError(
            "; ".join(f"{'.'.join(key) or 'subscriptions'}: {message}" for key, message in problems)
        )


class Contact(models.Model):
    # Unique by contact_external_id_unique: a constraint, not unique=True, which on
    # PostgreSQL adds a second (LIKE) index that every contact write updates and nothing reads.
    external_id = models.CharField(max_length=255)
    email = models.EmailField(blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    # An IANA name; blank means the DEFAULT_TIMEZONE setting. Quiet hours are read in it.
    timezone = models.CharField(
        max_length=64, blank=True, default="", db_default="", validators=[validate_timezone]
    )
    # One Subscription per channel of SUBSCRIPTION_CHANNELS; a channel missing counts as
    # subscribed (contact_subscription_status keeps out anything else). The database default
    # too: the engine and the CSV import insert contacts in bulk SQL.
    subscriptions = models.JSONField(
        default=default_subscriptions,
        db_default=models.Value(default_subscriptions(), output_field=models.JSONField()),
        blank=True,
        validators=[validate_subscriptions],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["email"], name="contact_email_idx")]
        constraints = [
            models.UniqueConstraint(fields=["external_id"], name="contact_external_id_unique"),
            # Cheap and portable: the two channels' values, where present, are statuses.
            models.CheckConstraint(
                condition=(
                    Q(subscriptions__email__isnull=True)
                    | Q(subscriptions__email__in=Subscription.values)
                )
                & (
                    Q(subscriptions__sms__isnull=True)
                    | Q(subscriptions__sms__in=Subscription.values)
                ),
                name="contact_subscription_status",
            ),
        ]

    def __str__(self):
        return self.external_id

    @property
    def zone_name(self) -> str:
        """The zone quiet hours are read in: the contact's own, or DEFAULT_TIMEZONE."""
        return self.timezone or settings.DEFAULT_TIMEZONE

    def subscription(self, channel: str) -> str:
        return (self.subscriptions or {}).get(channel, Subscription.SUBSCRIBED.value)


class Event(models.Model):
    """Something a contact did; also the queue of record for event processing."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSED = "processed", "Processed"
        DROPPED = "dropped", "Dropped (chain too deep)"
        FAILED = "failed", "Failed"

    class Source(models.TextChoices):
        API = "api", "API"
        INTERNAL = "internal", "Internal (conversion or goal)"
        ADMIN = "admin", "Admin"
        DEMO = "demo", "Demo"
        SEGMENT = "segment", "Segment-compatible API"

    # The caller's idempotency key; internal events get a deterministic one so that a retried
    # award never emits its event twice. Unique by event_id_unique (see Contact.external_id).
    event_id = models.CharField(max_length=100)
    # Indexed by event_contact_name_idx (contact, name, timestamp).
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    name = models.CharField(max_length=100)
    properties = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    depth = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["id"], condition=Q(status="pending"), name="event_pending_idx"),
            models.Index(fields=["contact", "name", "timestamp"], name="event_contact_name_idx"),
        ]
        constraints = [models.UniqueConstraint(fields=["event_id"], name="event_id_unique")]

    def __str__(self):
        return f"{self.name} ({self.contact_id})"


class Journey(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        LIVE = "live", "Live"
        # Contract 6.2: paused holds running enrollments and takes no new ones; stopped
        # exited them, and only a newly published version makes the journey live again.
        PAUSED = "paused", "Paused"
        STOPPED = "stopped", "Stopped"

    # Journeys whose running enrollments hold where they are (contract 6.2): the engine's
    # claim leaves their due work due, so a wait that ran out during a pause runs at the
    # resume; the sweep, /healthz and the metrics do not count it as late.
    HELD = (Status.PAUSED, Status.STOPPED)

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        permissions = [("publish_journey", "Can publish journey versions")]

    def __str__(self):
        return self.name


class JourneyVersion(models.Model):
    """One immutable graph of a journey once published; the draft is the only editable one."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        LIVE = "live", "Live"
        RETIRED = "retired", "Retired"

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    # The version's part of the definition (settings, triggers, exit_when, steps), canonical.
    definition = models.JSONField()
    # Share of new enrollments while two versions are live side by side; null = all of them.
    traffic = models.PositiveSmallIntegerField(null=True, blank=True)
    # The share this version had in its last split, kept after the split ends (`traffic` is
    # cleared then): the report's sample-ratio check compares the split's enrollments to it.
    split_traffic = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retired_at = models.DateTimeField(null=True, blank=True)
    # Set when this version started sharing new enrollments with another on a random split;
    # reports use it to tell a randomized comparison from a before/after one.
    split_with = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["journey", "number"], name="version_number_unique"),
            models.UniqueConstraint(
                fields=["journey"], condition=Q(state="draft"), name="version_one_draft"
            ),
            models.CheckConstraint(
                condition=Q(traffic__isnull=True) | Q(traffic__gte=1, traffic__lte=100),
                name="version_traffic_range",
            ),
        ]
        indexes = [models.Index(fields=["state", "journey"], name="version_state_idx")]

    def __str__(self):
        return f"{self.journey.key} v{self.number}"


class Enrollment(models.Model):
    """One run of one contact through one version; also the queue of record for the engine."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        EXITED = "exited", "Exited"
        FAILED = "failed", "Failed"

    class EntryLock(models.TextChoices):
        """Re-entry rules as a constraint (enrollment_reentry, unique per journey and
        contact): ONCE stays forever, ACTIVE is cleared when the enrollment ends (reentry
        after_exit); null, for concurrent, never collides."""

        ONCE = "once", "Once"
        ACTIVE = "active", "While active"

    # The foreign keys below are indexed by the composite indexes that start with them
    # (enrollment_contact_idx, enrollment_reentry, enrollment_version_idx): no index of
    # their own to write on every step.
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    journey = models.ForeignKey(
        Journey, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    # RESTRICT, not PROTECT: a version with enrollments cannot be deleted alone, but goes
    # with its journey, which deletes the enrollments too (admin's delete, issue 14).
    version = models.ForeignKey(
        JourneyVersion, on_delete=models.RESTRICT, related_name="enrollments", db_index=False
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    held_out = models.BooleanField(default=False)
    # The step to run when due_at comes; null when the enrollment has ended.
    current_step = models.CharField(max_length=64, blank=True, default="")
    due_at = models.DateTimeField(null=True, blank=True)
    # While an evaluate_goal step waits: the goal's key; an incoming event re-checks it.
    waiting_for_goal = models.CharField(max_length=64, blank=True, default="")
    wait_until = models.DateTimeField(null=True, blank=True)
    path = models.JSONField(default=list, blank=True)
    # Null means concurrent: NULLs never collide in the unique constraint (see EntryLock).
    entry_lock = models.CharField(  # noqa: DJ001
        max_length=16, choices=EntryLock.choices, null=True, blank=True
    )
    trigger_event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=200, blank=True, default="")
    # Runs that did not finish: leases that ran out unwritten (EngineLease) and steps that
    # raised; reset when a run is written.
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "contact", "entry_lock"], name="enrollment_reentry"
            ),
            models.UniqueConstraint(
                fields=["journey", "trigger_event"], name="enrollment_one_per_trigger_event"
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(state="active"), name="enrollment_due_idx"),
            models.Index(fields=["version", "started_at"], name="enrollment_version_idx"),
            models.Index(fields=["contact", "state"], name="enrollment_contact_idx"),
            models.Index(
                fields=["journey", "contact"],
                condition=Q(state="active"),
                name="enrollment_active_idx",
            ),
        ]

    def __str__(self):
        return f"{self.contact} in {self.version}"


# COPIED_FROM_ENROLLMENT: the journey, version and contact columns of the engine's fact rows
# (visits, outbox messages, awards, goal achievements) are copies of their enrollment's,
# written with it by the engine, kept for the reports' indexes. The database enforces the
# enrollment's own foreign key on awards and achievements and the enrollment's on those
# ids, so none can point nowhere; a second foreign-key check per copy ran at every commit
# (a third of the commit time of an engine batch) and is left out (`db_constraint=False`).
# An outbox row belongs to its visit: the database checks that one; its own enrollment
# column is a copy of the visit's. A visit's enrollment is held by the engine's row lock
# instead (StepVisit). Django's `on_delete` still applies: it is carried out by the ORM,
# not the database.


class EngineLease(models.Model):
    """A batch of enrollments a worker has taken: one row a batch, committed before the batch
    runs (with the batch before it), deleted by the transaction that writes the batch.

    Other workers' claims leave out the enrollments of every lease. A lease that runs out
    unwritten (`leased_until` passed: its worker died or stalled) is reaped by the next claim:
    each of its enrollments counts one more attempt (parked as failed after
    ENGINE_MAX_ATTEMPTS: it kept killing workers) and may be taken again. One row a batch
    instead of a new version of each enrollment row (issue 17: the lease was a fifth of the
    engine's database time)."""

    enrollment_ids = models.JSONField()
    leased_until = models.DateTimeField()

    def __str__(self):
        return f"Lease of {len(self.enrollment_ids)} enrollments until {self.leased_until}"


class StepVisit(models.Model):
    """A step an enrollment entered (the report's paths and funnels).

    The enrollment foreign key is not checked by the database, unlike every other fact
    row's: visits are one a step, and their check was a tenth of the engine's time (250,000
    at the commits of the benchmark's 50,000 contacts; bench/README.md, issue 17). What the
    check guarded holds by construction: the engine, the only writer of visits, inserts
    them in the transaction that holds their enrollment's row lock (FOR NO KEY UPDATE,
    which a DELETE waits for), for enrollments it has just read under it; enrollments are
    deleted only through the ORM, whose on_delete deletes their visits with them."""

    # Indexed by visit_seq_unique (enrollment, seq): an index of its own cost every step an
    # index entry more, for report joins on raw visits about 15% faster (bench/README.md).
    # Not checked by the database: see the class's docstring.
    # version is indexed by visit_version_step_idx.
    enrollment = models.ForeignKey(
        Enrollment,
        on_delete=models.CASCADE,
        related_name="visits",
        db_index=False,
        db_constraint=False,
    )
    # A copy of the enrollment's version, for the report: see COPIED_FROM_ENROLLMENT.
    version = models.ForeignKey(
        JourneyVersion,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    step_key = models.CharField(max_length=64)
    # Which way the enrollment left the step (then/else, achieved/not_achieved, split path).
    outcome = models.CharField(max_length=64, blank=True, default="")
    seq = models.PositiveIntegerField()
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "seq"], name="visit_seq_unique"),
        ]
        indexes = [models.Index(fields=["version", "step_key"], name="visit_version_step_idx")]

    def __str__(self):
        return f"{self.enrollment_id} @ {self.step_key}"


class OutboxMessage(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        OPENED = "opened", "Opened"
        CLICKED = "clicked", "Clicked"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"
        FAILED = "failed", "Failed"
        # Not sent, on purpose: `reason` says why. Never counted as failed.
        SKIPPED = "skipped", "Skipped"

    class Category(models.TextChoices):
        MARKETING = "marketing", "Marketing"
        TRANSACTIONAL = "transactional", "Transactional"

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"
        NO_ADDRESS = "no_address", "No address"
        FREQUENCY_CAP = "frequency_cap", "Frequency cap"
        # Not yet sent when its journey was stopped (journeys.actions.lifecycle).
        JOURNEY_STOPPED = "journey_stopped", "Journey stopped"

    visit = models.OneToOneField(StepVisit, on_delete=models.CASCADE, related_name="message")
    # A copy of the visit's enrollment: the database checks the visit (see
    # COPIED_FROM_ENROLLMENT).
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.CASCADE, related_name="messages", db_constraint=False
    )
    # A copy of the enrollment's contact: see COPIED_FROM_ENROLLMENT.
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="messages", db_constraint=False
    )
    step_key = models.CharField(max_length=64)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipient = models.CharField(max_length=255, blank=True, default="")
    subject = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    # The email's other template fields, copied from the step like subject and body; all
    # rendered at send (journeys.message_templates.render_email).
    preheader = models.TextField(blank=True, default="", db_default="")
    html = models.TextField(blank=True, default="", db_default="")
    from_email = models.CharField(max_length=320, blank=True, default="", db_default="")
    reply_to = models.CharField(max_length=320, blank=True, default="", db_default="")
    # Only marketing messages need consent, wait for quiet hours and count towards the
    # frequency cap (contract 6.1). Database defaults too: the engine inserts outbox rows
    # with raw SQL (journeys.bulk).
    category = models.CharField(
        max_length=16,
        choices=Category.choices,
        default=Category.MARKETING,
        db_default=Category.MARKETING,
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Why a message was skipped.
    reason = models.CharField(
        max_length=32, choices=Reason.choices, blank=True, default="", db_default=""
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField()
    leased_until = models.DateTimeField(null=True, blank=True)
    # Set, committed, right before the message is handed to the provider and cleared with the
    # outcome: a row still marked once its lease ran out was maybe sent, and is failed rather
    # than sent twice (journeys.actions.messages). Not a status: contract 6.1 lists those.
    sending_since = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The id the email provider gave the message when it took it (anymail's
    # `anymail_status.message_id`): its tracking webhooks name the message by it. A database
    # default too: the engine inserts outbox rows in bulk, naming only the columns it sets.
    # Indexed by outbox_provider_id_idx, only once set: the engine inserts every message
    # without one.
    provider_message_id = models.CharField(max_length=255, blank=True, default="", db_default="")
    # Delivery feedback, the first time each happened (journeys.actions.delivery). The status
    # only moves forward; these keep what it passed, so a message clicked was also opened.
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["due_at"], condition=Q(status="pending"), name="outbox_due_idx"),
            # The frequency cap's count: a contact's marketing messages on a channel sent
            # since a moment, or being sent (journeys.actions.messages).
            models.Index(
                fields=["contact", "channel", "sent_at"],
                condition=Q(category="marketing"),
                name="outbox_cap_idx",
            ),
            # Tracking webhooks find a message by its provider's id (journeys.actions.delivery).
            models.Index(
                fields=["provider_message_id"],
                condition=~Q(provider_message_id=""),
                name="outbox_provider_id_idx",
            ),
        ]

    def __str__(self):
        return f"{self.channel} to {self.recipient}"


class DeliveryEvent(models.Model):
    """One delivery or tracking event an email provider reported about a message, kept once
    per provider event id so that a webhook delivered twice changes nothing the second time."""

    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="events")
    provider = models.CharField(max_length=32)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=16)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "event_id"], name="delivery_event_once_per_provider_id"
            ),
        ]

    def __str__(self):
        return f"{self.event_type} of message {self.message_id}"


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        INGEST = "ingest", "Ingest (contacts and events)"
        MANAGE = "manage", "Manage (journeys and reports)"
        ALL = "all", "All"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a key.")
    # SHA-256 of the whole key: keys are long random strings, so a fast hash is safe here and
    # keeps every API call cheap (a password hasher would cost ~100 ms a request).
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.ALL)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self):
        return self.revoked_at is None


class ContactImport(models.Model):
    """A CSV file of contacts being imported (journeys.actions.imports): the work item a
    worker claims, its progress, and its counts. A draft waits for the person who uploaded it
    to confirm the column mapping; pending and running ones are the workers' (claimed with a
    lease, like the engine's work, so the sweep restarts one whose worker died)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Awaiting confirmation"
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Importing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    file_name = models.CharField(max_length=255)
    # Where the file is read from: under CONTACT_IMPORT_DIR for an upload, the given path
    # for the command.
    path = models.CharField(max_length=1000)
    size = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    attempts = models.PositiveIntegerField(default=0)
    leased_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Data rows of the file (counted before any write) and rows handled so far; a resumed
    # import skips the rows already handled.
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    refused_count = models.PositiveIntegerField(default=0)
    # A whole-file error (encoding, header, size): nothing was imported.
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["status"], name="contactimport_status_idx")]

    def __str__(self):
        return f"{self.file_name} ({self.get_status_display()})"

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return int(100 * self.rows_done / self.rows_total) if self.rows_total else 0


class ContactImportRefusal(models.Model):
    """One row of a ContactImport that was not imported, and why (its downloadable report)."""

    contact_import = models.ForeignKey(
        ContactImport, on_delete=models.CASCADE, related_name="refusals"
    )
    line = models.PositiveIntegerField()
    external_id = models.CharField(max_length=255, blank=True, default="")
    reason = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["contact_import", "line"], name="importrefusal_line_idx")]

    def __str__(self):
        return f"line {self.line}: {self.reason}"
