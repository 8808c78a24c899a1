"""Webhooks out: the endpoints people subscribe, the outbox of facts to report, one delivery
per fact and endpoint, and each attempt at it.

The outbox (`WebhookEvent`) names no endpoint: producers write one row per fact in their own
transaction without knowing who listens, and the delivery worker fans each row out to the
endpoints subscribed when it does so. A process that still believes a deleted endpoint is
subscribed therefore writes a harmless row, never a broken foreign key.
"""

from django.db import models


class EventType(models.TextChoices):
    CONVERSION_AWARDED = "conversion.awarded", "Conversion awarded"
    GOAL_ACHIEVED = "goal.achieved", "Goal achieved"
    ENROLLMENT_EXITED = "enrollment.exited", "Enrollment exited"
    MESSAGE_FAILED = "message.failed", "Message failed"
    # Only sent on request ("Send a test event"), to one endpoint; never subscribed.
    TEST = "webhook.test", "Test event"


SUBSCRIBABLE = [choice for choice in EventType.values if choice != EventType.TEST]


class WebhookEndpoint(models.Model):
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text="Event types sent to this endpoint.")
    # Shown once, when the endpoint is created; the API and the admin never show it again.
    secret = models.CharField(max_length=100, editable=False)
    enabled = models.BooleanField(default=True)
    # Since when every attempt has failed; cleared by a success. A day of it disables.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.url


class WebhookEvent(models.Model):
    """One fact to report, written in the transaction that made the fact."""

    msg_id = models.CharField(max_length=80, unique=True)
    event_type = models.CharField(max_length=40, choices=EventType.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField()
    fanned_out = models.BooleanField(default=False)
    # A test event goes to this endpoint alone.
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["id"], name="webhook_event_unfanned", condition=models.Q(fanned_out=False)
            )
        ]

    def __str__(self):
        return f"{self.event_type} {self.msg_id}"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField()
    leased_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="one_delivery_per_endpoint")
        ]
        indexes = [
            models.Index(
                fields=["due_at"],
                name="webhook_delivery_due",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self):
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    attempted_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error[:40]}"
