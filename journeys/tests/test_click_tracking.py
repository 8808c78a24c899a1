"""Click tracking of our own (CLICK_TRACKING): links of the HTML part become signed /c/
redirects that record the click and answer 302 to the URL that was in the message."""

import pytest
from django.core.mail import EmailMultiAlternatives

from journeys.links import click_url, track_email_clicks, tracked_html
from journeys.models import DeliveryEvent, OutboxMessage
from journeys.tests.actions.scenarios import T0, run, send
from journeys.tests.factories import ContactFactory
from journeys.tests.flows import live_journey

pytestmark = pytest.mark.django_db

BASE = "https://waypoint.example"
HTML = (
    '<p><a href="https://shop.example/pricing?plan=pro&amp;src=mail">Pricing</a> '
    "<a class='x' href='http://blog.example/'>Blog</a> "
    '<a href="mailto:help@acme.example">Mail us</a> '
    f'<a href="{BASE}/u/TOKEN">Unsubscribe</a></p>'
)


@pytest.fixture
def message(settings):
    settings.PUBLIC_BASE_URL = BASE
    settings.CLICK_TRACKING = True
    live_journey(
        [{"key": "mail", "type": "send_email", "subject": "Hi", "body": "Hi", "next": None}]
    )
    ContactFactory(external_id="ann", email="ann@example.com")
    send(("e1", "ann", "signed_up"), now=T0)
    run(now=T0)
    return OutboxMessage.objects.get()


def path_of(url):
    assert url.startswith(BASE + "/c/")
    return url.removeprefix(BASE)


def test_http_links_become_signed_redirects_and_ours_and_mailto_stay(message):
    html = tracked_html(HTML, outbox_id=message.pk)
    pricing = click_url(outbox_id=message.pk, url="https://shop.example/pricing?plan=pro&src=mail")
    assert f'href="{pricing}"' in html  # no &amp; in a signed token: nothing to unescape
    assert f"href='{click_url(outbox_id=message.pk, url='http://blog.example/')}'" in html
    assert 'href="mailto:help@acme.example"' in html
    assert f'href="{BASE}/u/TOKEN"' in html


def test_only_html_parts_are_rewritten_and_only_when_the_setting_is_on(message, settings):
    email = EmailMultiAlternatives("Hi", "Text https://shop.example/", to=["ann@example.com"])
    email.attach_alternative(HTML, "text/html")
    settings.CLICK_TRACKING = False
    track_email_clicks(email, outbox_id=message.pk)
    assert email.alternatives[0][0] == HTML
    settings.CLICK_TRACKING = True
    track_email_clicks(email, outbox_id=message.pk)
    assert (
        "/c/" in email.alternatives[0][0]
        and "https://shop.example/pricing" not in email.alternatives[0][0]
    )
    assert email.body == "Text https://shop.example/"


def test_a_click_records_once_and_redirects_without_login(client, message):
    url = path_of(click_url(outbox_id=message.pk, url="https://shop.example/pricing?plan=pro"))
    for _ in range(2):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == "https://shop.example/pricing?plan=pro"
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.CLICKED and message.clicked_at is not None
    assert DeliveryEvent.objects.filter(message=message, event_type="clicked").count() == 1


def test_a_forged_or_altered_token_is_404_and_records_nothing(client, message, settings):
    real = path_of(click_url(outbox_id=message.pk, url="https://shop.example/"))
    token = real.removeprefix("/c/")
    settings.SECRET_KEY = "another-installation-key"
    forged = path_of(click_url(outbox_id=message.pk, url="https://evil.example/"))
    settings.SECRET_KEY = "test-secret-key"
    for path in (
        forged,
        "/c/" + token[:-2] + "xx",
        "/c/nonsense",
        "/c/" + token.replace(":", "x", 1),
    ):
        assert client.get(path).status_code == 404
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.SENT
    assert not DeliveryEvent.objects.exclude(event_type="sent").exists()
