"""Contacts' subscriptions through the API (contract 6.1): partial updates, clear errors."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from journeys.models import Contact

pytestmark = pytest.mark.django_db


def test_subscriptions_default_to_subscribed_and_change_only_the_channels_given(api):
    response = api.put("/api/v1/contacts/ann", {"email": "ann@example.com"})
    assert response.json()["subscriptions"] == {"email": "subscribed", "sms": "subscribed"}

    response = api.put("/api/v1/contacts/ann", {"subscriptions": {"sms": "unsubscribed"}})
    assert response.status_code == 200
    assert response.json()["subscriptions"] == {"email": "subscribed", "sms": "unsubscribed"}

    api.put("/api/v1/contacts/ann", {"subscriptions": {"email": "bounced"}})
    body = api.get("/api/v1/contacts/ann").json()
    assert body["subscriptions"] == {"email": "bounced", "sms": "unsubscribed"}
    assert Contact.objects.get().subscriptions == {"email": "bounced", "sms": "unsubscribed"}


@pytest.mark.parametrize(
    ("subscriptions", "loc"),
    [
        ({"email": "maybe"}, ["subscriptions", "email"]),
        ({"push": "subscribed"}, ["subscriptions", "push"]),
        ({"sms": None, "email": 1}, ["subscriptions", "email"]),
        ("subscribed", ["subscriptions"]),
    ],
)
def test_an_unknown_channel_or_status_is_a_400_naming_it(api, subscriptions, loc):
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com"})
    response = api.put("/api/v1/contacts/ann", {"subscriptions": subscriptions})
    assert response.status_code == 400
    assert [error["loc"] for error in response.json()["errors"]] == [loc]
    assert Contact.objects.get().subscriptions == {"email": "subscribed", "sms": "subscribed"}


def test_the_database_and_the_model_refuse_an_unknown_status():
    contact = Contact(external_id="bob", subscriptions={"email": "maybe"})
    with pytest.raises(ValidationError, match="email: Unknown status"):
        contact.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        contact.save()
