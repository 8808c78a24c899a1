"""The contacts list: a total, real pages, search by email, id and name, and filters by
attribute, subscription and journey/step; every bad value a 400 naming the field."""

from urllib.parse import parse_qs, urlsplit

import pytest

from journeys.models import Contact
from journeys.selectors import CONTACT_PAGES_MAX
from journeys.tests.factories import ContactFactory, EnrollmentFactory, JourneyVersionFactory

pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    html = response.content.decode()
    return [
        part.split("</a>", 1)[0].split(">", 1)[1] for part in html.split('class="row-title"')[1:]
    ]


@pytest.fixture
def signed_in(client, viewer):
    client.force_login(viewer)
    return client


def test_pages_are_different_rows_and_carry_a_total(signed_in):
    Contact.objects.bulk_create(Contact(external_id=f"c-{n:03}") for n in range(120))
    first = signed_in.get("/contacts/")
    second = signed_in.get("/contacts/", {"page": 2})
    third = signed_in.get("/contacts/", {"page": 3})
    assert ids(first)[:2] == ["c-119", "c-118"]
    assert ids(second)[0] == "c-069"
    assert len(ids(first)) == len(ids(second)) == 50
    assert ids(third) == [f"c-{n:03}" for n in range(19, -1, -1)]
    assert "120 contacts" in first.content.decode()
    assert 'rel="next"' in first.content.decode()
    assert 'rel="next"' not in third.content.decode()
    assert 'rel="prev"' in third.content.decode()


def test_page_links_keep_the_filters_as_a_real_query_string(signed_in):
    Contact.objects.bulk_create(
        Contact(external_id=f"c-{n:03}", attributes={"plan": "pro"}) for n in range(60)
    )
    html = signed_in.get("/contacts/", {"attribute": "plan=pro", "email": "subscribed"})
    link = html.content.decode().split('rel="next" href="', 1)[1].split('"', 1)[0]
    query = parse_qs(urlsplit(link.replace("&amp;", "&")).query)
    assert query == {"attribute": ["plan=pro"], "email": ["subscribed"], "page": ["2"]}
    assert "[" not in link


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"page": "two"}, "Page", "whole number"),
        ({"page": "0"}, "Page", "greater than or equal to 1"),
        ({"page": str(CONTACT_PAGES_MAX + 1)}, "Page", "narrow the search"),
        ({"email": "maybe"}, "Email subscription", "not one of the available choices"),
        ({"attribute": "plan"}, "Attribute", "key=value"),
        ({"journey": "nope"}, "In journey", "There is no journey “nope”"),
        ({"step": "welcome"}, "At step", "Choose the journey"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_field(signed_in, params, field, message):
    response = signed_in.get("/contacts/", params)
    assert response.status_code == 400
    html = response.content.decode()
    assert f"{field}: " in html
    assert message in html


def test_an_unknown_step_or_version_of_a_journey_is_a_400(signed_in):
    enrollment = EnrollmentFactory(current_step="welcome")
    key = enrollment.journey.key
    response = signed_in.get("/contacts/", {"journey": key, "step": "nudge"})
    assert response.status_code == 400
    assert "has no step “nudge”" in response.content.decode()
    response = signed_in.get("/contacts/", {"journey": key, "version": 9})
    assert response.status_code == 400
    assert "has no version 9" in response.content.decode()


def test_a_page_past_the_end_says_so(signed_in):
    ContactFactory()
    response = signed_in.get("/contacts/", {"page": 5})
    assert response.status_code == 200
    assert "No contacts on page 5" in response.content.decode()


def test_search_by_email_external_id_and_name(signed_in):
    ContactFactory(external_id="ux-11", email="alice@example.com")
    ContactFactory(external_id="b-2", email="bob@example.com", attributes={"first_name": "Zoë"})
    ContactFactory(external_id="c-3", email="c@example.com", attributes={"last_name": "Quinn"})
    ContactFactory(external_id="d-4", email="d@example.com", attributes={"name": "Ada Lovelace"})
    assert ids(signed_in.get("/contacts/", {"q": "ALICE"})) == ["ux-11"]
    assert ids(signed_in.get("/contacts/", {"q": "ux-1"})) == ["ux-11"]
    assert ids(signed_in.get("/contacts/", {"q": "zo"})) == ["b-2"]
    assert ids(signed_in.get("/contacts/", {"q": "quin"})) == ["c-3"]
    assert ids(signed_in.get("/contacts/", {"q": "ada"})) == ["d-4"]
    response = signed_in.get("/contacts/", {"q": "ada"})
    assert "1 contact matches" in response.content.decode()


def test_filter_by_attribute_and_subscription(signed_in):
    ContactFactory(
        external_id="pro-bounced",
        attributes={"plan": "pro"},
        subscriptions={"email": "bounced", "sms": "subscribed"},
    )
    ContactFactory(external_id="pro-ok", attributes={"plan": "pro"})
    ContactFactory(external_id="free", attributes={"plan": "free"})
    Contact.objects.create(external_id="no-sms-key", subscriptions={"email": "subscribed"})
    assert ids(signed_in.get("/contacts/", {"attribute": "plan=pro"})) == [
        "pro-ok",
        "pro-bounced",
    ]
    assert ids(signed_in.get("/contacts/", {"email": "bounced"})) == ["pro-bounced"]
    both = {"attribute": "plan=pro", "email": "subscribed"}
    assert ids(signed_in.get("/contacts/", both)) == ["pro-ok"]
    # A channel missing from the JSON counts as subscribed.
    assert "no-sms-key" in ids(signed_in.get("/contacts/", {"sms": "subscribed"}))
    assert ids(signed_in.get("/contacts/", {"sms": "unsubscribed"})) == []


def test_filter_by_journey_version_and_step_lists_active_enrollments_only(signed_in):
    version = JourneyVersionFactory(definition={"steps": [{"key": "welcome"}, {"key": "nudge"}]})
    journey = version.journey
    EnrollmentFactory(version=version, current_step="nudge", contact__external_id="here")
    EnrollmentFactory(version=version, current_step="welcome", contact__external_id="elsewhere")
    EnrollmentFactory(
        version=version, current_step="nudge", state="completed", contact__external_id="done"
    )
    EnrollmentFactory(current_step="nudge", contact__external_id="other-journey")
    params = {"journey": journey.key, "step": "nudge"}
    assert ids(signed_in.get("/contacts/", params)) == ["here"]
    assert ids(signed_in.get("/contacts/", {"journey": journey.key})) == ["elsewhere", "here"]
    params["version"] = version.number
    assert ids(signed_in.get("/contacts/", params)) == ["here"]


def test_htmx_answers_the_results_only(signed_in):
    ContactFactory(external_id="alice")
    response = signed_in.get("/contacts/", {"q": "ali"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="results"')
    assert "alice" in html
