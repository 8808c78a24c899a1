"""docs/contract.md §2, `PUT` and `GET /api/v1/contacts/{external_id}`: 201 then 200 with
the contact, its enrollments and conversions read back with the keys the contract names,
and any external id an event creates (slashes included) reachable by both calls."""

import datetime
from urllib.parse import quote

import pytest

from tests.contract.public_surface import START, contact, definition, event, live, run_due, send

pytestmark = pytest.mark.django_db

ENROLLMENT_KEYS = {"journey", "version", "state", "held_out", "started_at", "ended_at", "path"}

CONVERSION_KEYS = {"journey", "version", "conversion", "value", "source", "step", "awarded_at"}


def test_put_contact_answers_201_then_200_with_the_contact(api):
    response = api.put(
        "/api/v1/contacts/ann", {"email": "ann@example.com", "attributes": {"plan": "pro"}}
    )
    assert response.status_code == 201
    assert response.json()["email"] == "ann@example.com"
    assert response.json()["attributes"] == {"plan": "pro"}
    response = api.put(
        "/api/v1/contacts/ann", {"email": "ann@example.org", "attributes": {"seats": 3}}
    )
    assert response.status_code == 200
    assert response.json()["email"] == "ann@example.org"
    assert response.json()["attributes"]["seats"] == 3


def test_get_contact_has_enrollments_and_conversions_with_contract_keys(api, clock):
    steps = [
        {"key": "hello", "type": "send_email", "subject": "Hi", "body": "x", "next": "buy"},
        {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
    ]
    live(
        api, definition("shop", steps, conversions=[{"key": "paid", "name": "Paid", "value": 12.5}])
    )
    api.put("/api/v1/contacts/ann", {"email": "ann@example.com"})
    send(api, event("ann", "signed_up"))
    run_due()
    body = contact(api, "ann")
    (enrollment,) = body["enrollments"]
    assert set(enrollment) >= ENROLLMENT_KEYS
    assert enrollment["journey"] == "shop"
    assert enrollment["version"] == 1
    assert enrollment["state"] == "completed"
    assert enrollment["held_out"] is False
    assert enrollment["path"] == ["hello", "buy"]
    assert datetime.datetime.fromisoformat(enrollment["started_at"]) == START
    assert datetime.datetime.fromisoformat(enrollment["ended_at"]) == START
    (award,) = body["conversions"]
    assert set(award) >= CONVERSION_KEYS
    assert {k: award[k] for k in CONVERSION_KEYS - {"awarded_at"}} == {
        "journey": "shop",
        "version": 1,
        "conversion": "paid",
        "value": 12.5,
        "source": "convert_step",
        "step": "buy",
    }
    assert datetime.datetime.fromisoformat(award["awarded_at"]) == START


@pytest.mark.parametrize("external_id", ["crm/123", "tenant/42/user/7", "ann@example.com", "a b+c"])
def test_any_external_id_an_event_creates_can_be_read_and_updated(api, external_id):
    send(api, event(external_id, "signed_up"))
    path = "/api/v1/contacts/" + quote(external_id, safe="")
    assert api.get(path).json()["external_id"] == external_id
    response = api.put(path, {"attributes": {"plan": "pro"}})
    assert response.status_code == 200
    assert api.get(path).json()["attributes"] == {"plan": "pro"}
    # Unquoted slashes reach the same contact.
    assert api.get(f"/api/v1/contacts/{external_id}").json()["external_id"] == external_id
