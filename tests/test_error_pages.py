"""The error pages look like the rest of the product: our stylesheet, a heading that says
what happened, and a way back. The 500 page renders without a request context (Django
gives it none) and without the database."""

import pytest
from django.test import RequestFactory

from config.security import server_error

pytestmark = pytest.mark.django_db


def _is_our_page(html: str, heading: str):
    assert "/static/css/app.css" in html
    assert f'<h1 id="h-error">{heading}</h1>' in html
    assert 'href="/journeys/"' in html


def test_an_unknown_page_gets_the_styled_404(client, viewer):
    client.force_login(viewer)
    response = client.get("/journeys/no-such-journey/")
    assert response.status_code == 404
    _is_our_page(response.content.decode(), "Page not found")
    assert "Log out" in response.content.decode()


def test_a_forbidden_page_gets_the_styled_403(client, viewer):
    client.force_login(viewer)
    response = client.post("/journeys/new/", {})  # a viewer may not create journeys
    assert response.status_code == 403
    _is_our_page(response.content.decode(), "Not allowed")


def test_the_server_error_page_is_styled_without_a_request_context():
    request = RequestFactory().get("/journeys/")
    response = server_error(request)
    assert response.status_code == 500
    _is_our_page(response.content.decode(), "Something went wrong")
