"""Save screenshots of the main pages to docs/screenshots/, from a running server.

    python manage.py seed_demo
    python manage.py runserver 127.0.0.1:8000 &
    python tests/browser/take_screenshots.py http://127.0.0.1:8000 USERNAME PASSWORD

The user should be a Publisher, so the editor shows its controls. Chromium comes from
CHROMIUM_PATH (default /usr/bin/chromium), launched with the same flags as the tests.
"""

import os
import sys
from pathlib import Path

import django
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django.setup()  # the shared conftest, which holds the Chromium flags, imports models

from conftest import CHROMIUM_FLAGS, CHROMIUM_PATH  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def main(base_url: str, username: str, password: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{base_url}/accounts/login/")
        page.screenshot(path=OUT / "login.png")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base_url}/journeys/")
        page.screenshot(path=OUT / "journeys.png", full_page=True)

        page.get_by_role("link", name="Trial to paid").click()
        page.get_by_role("link", name="Goals & conversions").click()
        page.get_by_role("heading", name="Conversions").wait_for()
        page.get_by_role("button", name="Add conversion").click()
        page.get_by_label("Name").wait_for()
        page.screenshot(path=OUT / "conversions.png", full_page=True)

        page.get_by_role("link", name="Flow", exact=True).click()
        page.locator(".step-card").nth(1).click()
        page.locator("#step-panel").wait_for()
        page.screenshot(path=OUT / "editor.png", full_page=True)

        page.goto(f"{base_url}/contacts/")
        page.screenshot(path=OUT / "contacts.png", full_page=True)
        page.locator("a.row-title").first.click()
        page.get_by_role("heading", name="Timeline").wait_for()
        page.screenshot(path=OUT / "contact.png", full_page=True)

        # The README's report picture: the demo's split with a verdict, its panels loaded.
        page.goto(f"{base_url}/journeys/trial-to-paid/report/")
        page.locator(".verdict").first.wait_for()
        page.wait_for_load_state("networkidle")
        page.screenshot(path=OUT / "report.png", full_page=True)
        browser.close()
    print(f"Saved screenshots to {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3])
