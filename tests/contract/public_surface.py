"""How a contract test reaches the product: only through its public surface (the HTTP
calls of `/api/v1/` and `run_due`, the operator's entry point), and the error shape of
docs/contract.md §2 that every refusal is checked against."""

import copy
import datetime
import io

from django.core.management import call_command

START = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)

ERROR_KEYS = {"loc", "message"}


def run_due():
    call_command("run_due", stdout=io.StringIO())


def definition(key, steps, **parts):
    data = {
        "key": key,
        "name": parts.pop("name", key.replace("-", " ").title()),
        "settings": {"reentry": "once", "holdout_percent": 0},
        "triggers": [{"type": "event", "event": "signed_up"}],
        "exit_when": [],
        "goals": [],
        "conversions": [],
        "steps": copy.deepcopy(steps),
    }
    data.update(copy.deepcopy(parts))
    return data


def create(api, data):
    response = api.post("/api/v1/journeys", data)
    assert response.status_code == 201, response.content
    return response.json()


def publish(api, key, number, **body):
    response = api.post(f"/api/v1/journeys/{key}/versions/{number}/publish", body or None)
    assert response.status_code == 200, response.content
    return response.json()


def live(api, data):
    create(api, data)
    publish(api, data["key"], 1)


def send(api, *events):
    response = api.post("/api/v1/events", {"events": list(events)})
    assert response.status_code == 202, response.content
    return response.json()


_ids = iter(range(1, 10**9))


def event(contact, name, **extra):
    return {"id": extra.pop("id", f"ev-{next(_ids)}"), "contact": contact, "name": name, **extra}


def contact(api, external_id):
    response = api.get(f"/api/v1/contacts/{external_id}")
    assert response.status_code == 200, response.content
    return response.json()


def assert_error_shape(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"errors"}
    assert body["errors"]
    for error in body["errors"]:
        assert set(error) == ERROR_KEYS
        assert isinstance(error["loc"], list)
        assert isinstance(error["message"], str) and error["message"]
    return body["errors"]


def locs(errors):
    return [error["loc"] for error in errors]


def awards(api, who="ann"):
    return [(a["conversion"], a["value"], a["source"]) for a in contact(api, who)["conversions"]]
