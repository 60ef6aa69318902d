"""A real headless browser for the console tests: Debian's chromium, driven by Playwright.

`hack/ci-setup-browser.sh` (run by hack/test) installs /usr/bin/chromium; Playwright's own
browser download is never used. A missing browser is a test ERROR naming the fix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("KUBEWRIT_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1366, "height": 768}
# The README's screenshots are refreshed with KUBEWRIT_SCREENSHOTS=docs/screenshots; otherwise
# the tests still take them (a page that cannot render fails), into a scratch folder.
SCREENSHOTS = Path(
    os.environ.get("KUBEWRIT_SCREENSHOTS") or Path(tempfile.gettempdir()) / "kubewrit-screenshots"
).resolve()

# Runs before any page script: records CSP violations, dialogs and what an injected script
# would have done, so a test can assert that nothing ran.
WATCH = """
window.__violations = [];
window.__xss = [];
document.addEventListener('securitypolicyviolation', e => window.__violations.push(
  e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || '')));
"""


@dataclass
class Pages:
    """Opens pages in fresh browser contexts (separate cookie jars, like separate people)."""

    browser: Any
    opened: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def new(self) -> Any:
        context = self.browser.new_context(viewport=LAPTOP, locale="en-GB")
        context.add_init_script(WATCH)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.opened.append(context)
        return page

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")  # an alert() would be a script running
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        # A refusal the test provokes (401 sign-in, 403 forged form) is the page working.
        expected = any(f"status of {code}" in message.text for code in (401, 403))
        if message.type == "error" and not expected:
            self.problems.append(f"console {message.type}: {message.text}")

    def close(self) -> None:
        for context in self.opened:
            with contextlib.suppress(Exception):  # a test may have closed it already
                context.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Per module: Playwright's sync API runs an event loop of its own while it is open, which
    must be gone before other modules' asyncio tests run."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run hack/ci-setup-browser.sh (hack/test does)", pytrace=False
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def pages(chromium: Any) -> Iterator[Pages]:
    opened = Pages(chromium)
    yield opened
    opened.close()


def screenshot(page: Any, name: str) -> Path:
    """Full-page screenshot (into docs/screenshots/, shown in the README, when asked)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def no_script_ran(page: Any) -> None:
    """Nothing injected ran, and nothing was even attempted (the CSP saw no inline script)."""
    assert page.evaluate("window.__xss") == []
    assert page.evaluate("window.__violations") == []


def decided_card(page: Any, approval_id: str, timeout: float = 15_000) -> Any:
    """The card's result once it shows the final decision, whichever render got there first.

    The queue's live stream may show the claim (Deciding) before the approver's own answer
    arrives; the final decision is what an approver reads.
    """
    page.wait_for_function(
        "id => /Final decision after re-evaluation: (PERMIT|DENY)/.test("
        "(document.querySelector('#approval-' + id + ' .result') || {}).innerText || '')",
        arg=approval_id,
        timeout=timeout,
    )
    return page.locator(f"#approval-{approval_id} .result")


def no_horizontal_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide"


Waiter = Callable[[], bool]
