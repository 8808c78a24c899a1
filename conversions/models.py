from django.conf import settings
from django.db import models
from django.db.models import Q

from journeys.models import Contact, Enrollment, Event, Journey, JourneyVersion


class Counting(models.TextChoices):
    ONCE_PER_ENROLLMENT = "once_per_enrollment", "Once per enrollment"
    ONCE_PER_CONTACT = "once_per_contact", "Once per contact"
    EVERY_TIME = "every_time", "Every time"


class Conversion(models.Model):
    """A business outcome of a journey; it belongs to the journey, not to a version."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="conversions")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    # Lower-cased letters and digits only, so "Booked meeting" and "booked-meeting " collide.
    normalized_name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    counting = models.CharField(
        max_length=24, choices=Counting.choices, default=Counting.ONCE_PER_ENROLLMENT
    )
    window = models.DurationField(null=True, blank=True)
    event_name = models.CharField(max_length=100, blank=True, default="")
    event_where = models.JSONField(default=list, blank=True)
    value_property = models.CharField(max_length=100, blank=True, default="")
    position = models.PositiveIntegerField(default=0)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["journey", "position", "key"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "key"], name="conversion_key_unique"),
            models.UniqueConstraint(
                fields=["journey", "normalized_name"], name="conversion_name_unique"
            ),
            models.CheckConstraint(condition=Q(value__gte=0), name="conversion_value_positive"),
        ]
        indexes = [models.Index(fields=["event_name"], name="conversion_event_idx")]

    def __str__(self):
        return self.name


class Goal(models.Model):
    """A milestone check used in flow logic; may award a linked conversion when achieved."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="goals")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    normalized_name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    criteria = models.JSONField()
    conversion = models.ForeignKey(
        Conversion, null=True, blank=True, on_delete=models.RESTRICT, related_name="goals"
    )
    position = models.PositiveIntegerField(default=0)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["journey", "position", "key"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "key"], name="goal_key_unique"),
            models.UniqueConstraint(fields=["journey", "normalized_name"], name="goal_name_unique"),
        ]

    def __str__(self):
        return self.name


class Revision(models.Model):
    """A dated change to a goal or conversion of a journey; reports mark each one."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        ARCHIVED = "archived", "Archived"
        RESTORED = "restored", "Restored"

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="revisions")
    conversion = models.ForeignKey(
        Conversion, null=True, blank=True, on_delete=models.CASCADE, related_name="revisions"
    )
    goal = models.ForeignKey(
        Goal, null=True, blank=True, on_delete=models.CASCADE, related_name="revisions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The definition after the change, and {field: [before, after]} for a change.
    snapshot = models.JSONField()
    changes = models.JSONField(default=dict, blank=True)
    # True when the journey had a live version at the time: the change affects running flows.
    while_live = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(conversion__isnull=False, goal__isnull=True)
                | Q(conversion__isnull=True, goal__isnull=False),
                name="revision_one_subject",
            ),
        ]

    def __str__(self):
        return f"{self.kind} {self.conversion or self.goal} at {self.created_at:%Y-%m-%d}"


class GoalAchievement(models.Model):
    # goal and version are indexed by goal_once_per_enrollment and achievement_version_idx.
    goal = models.ForeignKey(
        Goal, on_delete=models.RESTRICT, related_name="achievements", db_index=False
    )
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.CASCADE, related_name="goal_achievements"
    )
    # Copies of the enrollment's: see journeys.models.COPIED_FROM_ENROLLMENT.
    journey = models.ForeignKey(
        Journey, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    version = models.ForeignKey(
        JourneyVersion,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="goal_achievements", db_constraint=False
    )
    step_key = models.CharField(max_length=64, blank=True, default="")
    achieved_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["goal", "enrollment"], name="goal_once_per_enrollment"),
        ]
        indexes = [models.Index(fields=["version", "goal"], name="achievement_version_idx")]

    def __str__(self):
        return f"{self.goal} by {self.contact_id}"


class ConversionAward(models.Model):
    """One counted conversion. The counting mode is copied onto the row so that a partial
    unique constraint per mode makes double counting impossible, whatever races happen."""

    class Source(models.TextChoices):
        CONVERT_STEP = "convert_step", "Convert step"
        GOAL = "goal", "Goal"
        EVENT = "event", "Event"

    # conversion and version are indexed by award_time_idx and award_version_idx.
    conversion = models.ForeignKey(
        Conversion, on_delete=models.RESTRICT, related_name="awards", db_index=False
    )
    # journey, version and contact are copies of the enrollment's: see
    # journeys.models.COPIED_FROM_ENROLLMENT for why the database checks only the enrollment.
    journey = models.ForeignKey(
        Journey, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    version = models.ForeignKey(
        JourneyVersion,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="awards")
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="awards", db_constraint=False
    )
    counting = models.CharField(max_length=24, choices=Counting.choices)
    value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    source = models.CharField(max_length=16, choices=Source.choices)
    step_key = models.CharField(max_length=64, blank=True, default="")
    source_event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # For every_time: what made this award distinct ("event:<id>" or "seq:<visit seq>").
    dedupe_key = models.CharField(max_length=64, blank=True, default="")
    awarded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "enrollment"],
                condition=Q(counting="once_per_enrollment"),
                name="award_once_per_enrollment",
            ),
            models.UniqueConstraint(
                fields=["conversion", "contact"],
                condition=Q(counting="once_per_contact"),
                name="award_once_per_contact",
            ),
            models.UniqueConstraint(
                fields=["conversion", "enrollment", "dedupe_key"],
                condition=Q(counting="every_time"),
                name="award_every_time_once_per_source",
            ),
        ]
        indexes = [
            models.Index(fields=["version", "conversion"], name="award_version_idx"),
            models.Index(fields=["conversion", "awarded_at"], name="award_time_idx"),
        ]

    def __str__(self):
        return f"{self.conversion} for {self.contact_id}"
