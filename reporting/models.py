"""Rollups of the report's facts, by version and UTC day of enrollment start.

They only speed the report up: a report adds the facts not rolled up yet (ids past each
watermark) to the rollups, so its figures are exact whether or not the refresh has run.
`refresh_rollups` folds new facts in; `rebuild_report_rollups` recomputes them from scratch.
"""

from django.db import models

from conversions.models import Conversion, Goal
from journeys.models import JourneyVersion


class VersionDay(models.Model):
    """Enrollments started on a version that day."""

    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    held_out = models.BooleanField()
    enrolled = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "day", "held_out"], name="versionday_unique")
        ]

    def __str__(self):
        return f"{self.version_id} {self.day}: {self.enrolled}"


class ConversionDay(models.Model):
    """Of the enrollments started on a version that day: how many have at least one award of
    the conversion, and the value of all their awards."""

    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    held_out = models.BooleanField()
    converted = models.PositiveIntegerField(default=0)
    value = models.DecimalField(max_digits=18, decimal_places=2, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "version", "day", "held_out"], name="conversionday_unique"
            )
        ]

    def __str__(self):
        return f"{self.conversion_id} {self.version_id} {self.day}: {self.converted}"


class StepDay(models.Model):
    """Of the enrollments started on a version that day: how many entered the step."""

    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    step_key = models.CharField(max_length=64)
    entered = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "day", "step_key"], name="stepday_unique")
        ]

    def __str__(self):
        return f"{self.version_id} {self.day} {self.step_key}: {self.entered}"


class StepConversionDay(models.Model):
    """Of the enrollments started on a version that day that entered the step: how many
    have at least one award of the conversion."""

    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    step_key = models.CharField(max_length=64)
    converted = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "version", "day", "step_key"],
                name="stepconversionday_unique",
            )
        ]

    def __str__(self):
        return f"{self.conversion_id} {self.version_id} {self.day} {self.step_key}"


class ConvertTimeDay(models.Model):
    """Of the enrollments started on a version that day: how many had their first award of
    the conversion after a time in `bucket` (reporting/rollups.py: log-spaced buckets of
    seconds from the start of the enrollment). Percentiles are read from these counts."""

    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    bucket = models.SmallIntegerField()
    converted = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "version", "day", "bucket"], name="converttimeday_unique"
            )
        ]

    def __str__(self):
        return f"{self.conversion_id} {self.version_id} {self.day} [{self.bucket}]"


class GoalTimeDay(models.Model):
    """Of the enrollments started on a version that day: how many achieved the goal after a
    time in `bucket` (as ConvertTimeDay)."""

    goal = models.ForeignKey(Goal, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    bucket = models.SmallIntegerField()
    achieved = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["goal", "version", "day", "bucket"], name="goaltimeday_unique"
            )
        ]

    def __str__(self):
        return f"{self.goal_id} {self.version_id} {self.day} [{self.bucket}]"


class RollupWatermark(models.Model):
    """How far each fact table is rolled up. Rows with ids up to `rolled_up` are in the
    rollups; `seen` is the highest id at the previous refresh, folded in at the next one, so
    that a transaction still open at one refresh has committed by the next."""

    class Fact(models.TextChoices):
        ENROLLMENT = "enrollment", "Enrollments"
        VISIT = "visit", "Step visits"
        AWARD = "award", "Conversion awards"
        ACHIEVEMENT = "achievement", "Goal achievements"
        MESSAGE_EVENT = "message_event", "Message events"

    fact = models.CharField(max_length=16, choices=Fact.choices, unique=True)
    rolled_up = models.BigIntegerField(default=0)
    seen = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.fact} up to {self.rolled_up}"


class PathDay(models.Model):
    """Of the treated enrollments started on a version that day: how many have taken exactly
    this path (their step keys in order, as far as the visits rolled up go). An enrollment
    moves from its old path to its new one at each refresh that sees new visits of it."""

    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    path_hash = models.CharField(max_length=32)
    path = models.JSONField()
    # Signed: a refresh adds and subtracts; the sum over the facts is never negative.
    enrolled = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "day", "path_hash"], name="pathday_unique")
        ]

    def __str__(self):
        return f"{self.version_id} {self.day} {self.path}: {self.enrolled}"


class PathConversionDay(models.Model):
    """Of those enrollments on that path: how many have an award of the conversion."""

    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    path_hash = models.CharField(max_length=32)
    converted = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "version", "day", "path_hash"],
                name="pathconversionday_unique",
            )
        ]

    def __str__(self):
        return (
            f"{self.conversion_id} {self.version_id} {self.day} {self.path_hash}: {self.converted}"
        )


# Messages ---------------------------------------------------------------------------------
#
# A message's figures change after it is written (sent, then delivered, opened, clicked...)
# and the credit of an award goes to whichever message touched its enrollment last, so these
# cannot be folded in by id like the rollups above. They are kept per chunk of enrollment
# ids (reporting/message_rollups.py): a refresh recomputes every chunk that a message event
# (DeliveryEvent: sent, and each kind of feedback) or an award touched since the previous
# one, moving the chunk's old figures out of the day totals and its new ones in; a read
# takes the day totals, less the rows of the chunks touched since, plus those chunks
# computed from the facts.


class MessageCounters(models.Model):
    """The messages sent at a step, and what the provider reported back (MessageCounts)."""

    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    step_key = models.CharField(max_length=64)
    channel = models.CharField(max_length=8)
    # Signed: a refresh moves a chunk's figures out and back in.
    sent = models.IntegerField(default=0)
    delivered = models.IntegerField(default=0)
    opened = models.IntegerField(default=0)
    clicked = models.IntegerField(default=0)
    bounced = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)

    class Meta:
        abstract = True


class MessageDay(MessageCounters):
    """Of the enrollments started on a version that day: their messages at a step."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["version", "day", "step_key", "channel"], name="messageday_unique"
            )
        ]

    def __str__(self):
        return f"{self.version_id} {self.day} {self.step_key}: {self.sent}"


class MessageChunkDay(MessageCounters):
    """The same, of the enrollments in one chunk of ids: what a refresh moves."""

    chunk = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chunk", "version", "day", "step_key", "channel"],
                name="messagechunkday_unique",
            )
        ]

    def __str__(self):
        return f"#{self.chunk} {self.version_id} {self.day} {self.step_key}: {self.sent}"


class MessageCredits(models.Model):
    """The awards of the conversion credited to the message step under an attribution
    (reporting.message_rollups.TOUCHED_AT), within the conversion's window as it was when
    they were computed (MessageCreditWindow), and their value."""

    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    step_key = models.CharField(max_length=64)
    attribution = models.CharField(max_length=16)
    awards = models.IntegerField(default=0)
    value = models.DecimalField(max_digits=18, decimal_places=2, default=0)

    class Meta:
        abstract = True


class MessageCreditDay(MessageCredits):
    """Of the enrollments started on a version that day: the credits of a message step."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "attribution", "version", "day", "step_key"],
                name="messagecreditday_unique",
            )
        ]

    def __str__(self):
        return f"{self.conversion_id} {self.attribution} {self.version_id} {self.day}"


class MessageCreditChunkDay(MessageCredits):
    """The same, of the enrollments in one chunk of ids."""

    chunk = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chunk", "conversion", "attribution", "version", "day", "step_key"],
                name="messagecreditchunkday_unique",
            )
        ]

    def __str__(self):
        return f"#{self.chunk} {self.conversion_id} {self.attribution} {self.version_id}"


class MessageCreditWindow(models.Model):
    """The window a conversion's credits were computed with. When the conversion's window is
    changed, its credits are read from the facts until the next refresh recomputes them."""

    conversion = models.OneToOneField(
        Conversion, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    window = models.DurationField(null=True, blank=True)

    def __str__(self):
        return f"{self.conversion_id}: {self.window}"
