"""The hosted unsubscribe page (no login, one-click POST) and the contact page's
subscriptions form (contract 6.1, docs/messages.md)."""

import pytest
from django.test import Client

from journeys.consent import unsubscribe_token, unsubscribe_url
from journeys.models import Contact
from journeys.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann():
    return ContactFactory(external_id="ann", email="ann@example.com")


def _path(contact, channel="email"):
    return "/u/" + unsubscribe_token(contact_id=contact.pk, channel=channel)


def test_the_link_starts_with_public_base_url(ann, settings):
    settings.PUBLIC_BASE_URL = "https://mail.example.com/"
    assert unsubscribe_url(contact_id=ann.pk) == "https://mail.example.com" + _path(ann)


def test_get_shows_an_unsubscribe_button_without_login_and_changes_nothing(ann):
    response = Client().get(_path(ann))
    assert response.status_code == 200
    html = response.content.decode()
    assert ">Unsubscribe</button>" in html
    assert 'class="mainnav"' not in html
    assert Contact.objects.get().subscriptions["email"] == "subscribed"


def test_one_click_post_without_csrf_token_unsubscribes_then_resubscribe_undoes_it(ann):
    client = Client(enforce_csrf_checks=True)
    response = client.post(_path(ann), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert ">Resubscribe</button>" in response.content.decode()
    assert Contact.objects.get().subscriptions == {"email": "unsubscribed", "sms": "subscribed"}
    # Twice is the same.
    assert client.post(_path(ann)).status_code == 200
    response = client.post(_path(ann), {"resubscribe": "1"})
    assert response.status_code == 200
    assert Contact.objects.get().subscriptions["email"] == "subscribed"


def test_an_sms_token_changes_sms_only(ann):
    Client().post(_path(ann, "sms"))
    assert Contact.objects.get().subscriptions == {"email": "subscribed", "sms": "unsubscribed"}


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_forged_or_garbled_token_is_a_404(ann, method):
    other = ContactFactory(external_id="bob")
    token = unsubscribe_token(contact_id=ann.pk, channel="email")
    value, stamp, signature = token.split(":")
    forged = unsubscribe_token(contact_id=other.pk, channel="email").split(":")[0]
    for bad in [f"{forged}:{stamp}:{signature}", token[:-2], "nonsense", token + "x"]:
        response = getattr(Client(), method)("/u/" + bad)
        assert response.status_code == 404, bad
    assert Contact.objects.get(pk=ann.pk).subscriptions["email"] == "subscribed"


def test_a_token_of_an_erased_or_deleted_contact_is_a_404(ann):
    path = _path(ann)
    ann.delete()
    assert Client().post(path).status_code == 404


def test_an_editor_changes_subscriptions_on_the_contact_page(client, editor, ann):
    client.force_login(editor)
    page = client.get("/contacts/ann/").content.decode()
    assert "Save subscriptions" in page
    response = client.post(
        "/contacts/ann/subscriptions/", {"email": "unsubscribed", "sms": "subscribed"}
    )
    assert response.status_code == 302
    assert Contact.objects.get().subscriptions == {"email": "unsubscribed", "sms": "subscribed"}
    response = client.post("/contacts/ann/subscriptions/", {"email": "nope", "sms": "subscribed"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()


def test_a_viewer_sees_subscriptions_but_cannot_change_them(client, viewer, ann):
    client.force_login(viewer)
    page = client.get("/contacts/ann/").content.decode()
    assert "Save subscriptions" not in page
    assert "Subscribed" in page
    response = client.post(
        "/contacts/ann/subscriptions/", {"email": "unsubscribed", "sms": "subscribed"}
    )
    assert response.status_code == 403
    assert Contact.objects.get().subscriptions["email"] == "subscribed"
