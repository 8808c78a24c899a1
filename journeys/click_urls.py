"""The route of the click redirects alone (`/c/TOKEN`), included at the root of the site's
URLconf: journeys.links reverses against it, so a worker that builds click links at send
never imports the site's URLconf (every page and API, the report's numerical libraries
among them: about 120 MB)."""

from django.urls import path

from journeys.clicks import click_redirect

urlpatterns = [path("c/<str:token>", click_redirect, name="click")]
