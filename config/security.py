"""Security plumbing that settings point at: the login lockout page and the log filter that
keeps email addresses out of log lines."""

import logging
import re

EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_emails(text: str) -> str:
    """'ada.lovelace@example.com' -> 'a***@example.com': enough to tell addresses apart in
    an incident, not enough to contact anyone."""
    return EMAIL_RE.sub(r"\1***@\2", text)


class MaskEmailsFilter(logging.Filter):
    """Rewrites each record's message with email addresses masked. The record is formatted
    once here (args merged into msg) so an address passed as an argument is masked too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask_emails(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer once a username and address have failed too often: the login
    page again, status 429, with the reason and when to try again above the form."""
    # Imported here: logging settings load this module before Django's apps are ready.
    from django.conf import settings
    from django.contrib.auth.forms import AuthenticationForm
    from django.core.exceptions import ValidationError
    from django.shortcuts import render

    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60) or 1
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    form = AuthenticationForm(request, initial={"username": username})
    form.cleaned_data = {}
    form.add_error(
        None,
        ValidationError(
            f"Too many failed login attempts. Log in is locked for {minutes} minutes; "
            "try again later or ask an administrator to unlock the account."
        ),
    )
    response = render(
        request,
        "registration/login.html",
        {"form": form, "next": request.POST.get("next", "")},
        status=429,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response
