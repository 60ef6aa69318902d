"""The approver's console on `kubewrit serve`, in a real browser, from the approver's side."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import Pages, decided_card, no_horizontal_scroll, no_script_ran, screenshot
from tests.conftest import Server, start_server


@pytest.fixture
def served(tmp_path: Path) -> Any:
    server = start_server(tmp_path, "--anchor-seconds", "0.5")
    yield server
    server.stop()


def sign_in(page: Any, server: Server, name: str) -> None:
    page.goto(f"{server.url}/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("#secret", server.tokens[name])
    page.click("button[type=submit]")


def card_of(page: Any, approval_id: str) -> Any:
    return page.locator(f"#approval-{approval_id}")


def test_an_approver_decides_the_refund_from_the_console(served: Server, pages: Pages) -> None:
    page = pages.new()

    # An agent's token cannot sign in; nothing is set that would let it in.
    sign_in(page, served, "support-agent")
    page.locator("#signin-error").wait_for()
    assert "agent tokens cannot sign in" in page.inner_text("#signin-error")
    assert not [c for c in page.context.cookies() if c["name"] == "kubewrit_console"]
    assert page.url.endswith("/ui/login")

    sign_in(page, served, "approver")
    page.wait_for_url(f"{served.url}/ui/")
    assert page.inner_text("#viewer") == "approver"
    session = next(c for c in page.context.cookies() if c["name"] == "kubewrit_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert served.tokens["approver"] not in page.content()
    page.locator("#queue-empty").wait_for()
    page.evaluate("window.__notReloaded = true")

    # The $340 refund appears in the queue live: no reload (the marker survives).
    earlier = served.decide(tool="process_refund", args={"amount": 45, "order_id": "A-1000"})
    assert earlier.json()["decision"] == "PERMIT"
    held = served.decide(tool="process_refund", args={"amount": 340, "order_id": "A-1001"}).json()
    assert held["decision"] == "DEFER"
    approval_id = held["approval"]["id"]
    card = card_of(page, approval_id)
    card.wait_for(timeout=10_000)
    assert page.evaluate("window.__notReloaded") is True
    text = card.inner_text()
    for shown in ("process_refund", "support-agent", "340", "A-1001", "mid-range-refunds"):
        assert shown in text, shown
    assert "Mid-range refunds require manager review" in text
    assert "risk low" in text and "expires in" in text
    # The policy and action it was held under, whole in their titles; the agent's day.
    assert card.locator(f"code[title='{held['policy_hash']}']").count() == 1
    assert card.locator(f"code[title='{held['action_hash']}']").count() == 1
    day = card.locator("details.history summary").inner_text()
    assert "support-agent today: 2 process_refund calls" in day, day
    assert "(1 permitted, 1 held, 0 denied)" in day, day
    assert page.inner_text("#pending-count") == "1"
    countdown = card.locator("time.countdown")
    first = countdown.inner_text()
    page.wait_for_function(
        "t => document.querySelector('time.countdown').textContent !== t", arg=first
    )
    no_horizontal_scroll(page)
    screenshot(page, "console-queue")

    # A second approver's tab, opened now, still shows the form after the first decides.
    other = pages.new()
    sign_in(other, served, "approver")
    other.goto(f"{served.url}/ui/approvals/{approval_id}")

    # The agent long-polls; the approver approves with a reason, by keyboard.
    polled: dict[str, Any] = {}
    poll = threading.Thread(
        target=lambda: polled.update(
            served.get(f"/v1/approvals/{approval_id}?wait=30", as_="support-agent").json()
        )
    )
    poll.start()
    reason = card.locator("input[name=reason]")
    reason.focus()
    page.keyboard.type("customer verified")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # focus is on Approve
    result = decided_card(page, approval_id)
    # The agent may collect its writ before the card is read: Approved, or already Consumed.
    assert re.search(r"(Approved|Consumed) by approver", result.inner_text())
    assert "customer verified" in result.inner_text()
    assert "PERMIT" in result.inner_text()
    poll.join(timeout=40)
    assert polled["phase"] == "Consumed", polled
    assert polled["outcome"]["decision"] == "PERMIT" and polled["outcome"]["writ"]

    # The record of the approval names the approver.
    record = polled["outcome"]["record"]
    page.locator(".record-link").first.click()
    page.wait_for_url(f"**/ui/records/{record['chain']}/{record['seq']}")
    assert page.inner_text("#field-approver") == "approver"
    assert page.inner_text("#field-decision") == "PERMIT"
    assert record["hash"] in page.inner_text("table.fields")
    # An approval's record is signed on its own (its writ is issued from it alone).
    assert re.fullmatch(r"[A-Za-z0-9_-]{86}", page.inner_text("#field-signature").strip())
    screenshot(page, "console-record")

    # The stale tab cannot decide again, and says why.
    other.fill(f"#reason-{approval_id}", "second opinion")
    other.click("button[value=deny]")
    refusal = card_of(other, approval_id).locator("[role=alert]")
    refusal.wait_for()
    assert "is already Consumed by approver" in refusal.inner_text()
    assert "decided only once" in other.inner_text(".final-reason")
    assert card_of(other, approval_id).locator("form.decide").count() == 0

    # The $1,200 denial shows in the records.
    denied = served.decide(tool="process_refund", args={"amount": 1200}).json()
    assert denied["decision"] == "DENY"
    page.goto(f"{served.url}/ui/records?decision=DENY")
    rows = page.locator("table.records tbody tr")
    assert rows.count() == 1
    assert "large-refunds" in rows.first.inner_text() and "rule_deny" in rows.first.inner_text()
    assert "intact" in page.inner_text("#chain-badge")
    no_script_ran(page)
    assert pages.problems == []


def test_an_approver_denies_from_the_console_and_the_agent_gets_deny(
    served: Server, pages: Pages
) -> None:
    page = pages.new()
    sign_in(page, served, "approver")
    page.wait_for_url(f"{served.url}/ui/")
    held = served.decide(tool="process_refund", args={"amount": 340, "order_id": "A-2"}).json()
    approval_id = held["approval"]["id"]
    card = card_of(page, approval_id)
    card.wait_for(timeout=10_000)
    card.locator("input[name=reason]").fill("no receipt")
    card.locator("button[value=deny]").click()
    result = decided_card(page, approval_id)
    assert re.search(r"Denied by approver", result.inner_text()), result.inner_text()
    assert "no receipt" in result.inner_text()
    outcome = served.get(f"/v1/approvals/{approval_id}", as_="support-agent").json()
    assert outcome["phase"] == "Denied"
    assert outcome["outcome"]["decision"] == "DENY" and not outcome["outcome"].get("writ")
    record = outcome["outcome"]["record"]
    page.goto(f"{served.url}/ui/records/{record['chain']}/{record['seq']}")
    assert page.inner_text("#field-decision") == "DENY"
    assert page.inner_text("#field-approver") == "approver"
    assert pages.problems == []


def test_tampering_turns_the_chain_badge_red(served: Server, pages: Pages) -> None:
    for amount in (45, 60, 75):
        assert served.decide(tool="process_refund", args={"amount": amount}).json()["decision"]
    page = pages.new()
    sign_in(page, served, "approver")
    page.goto(f"{served.url}/ui/records")
    assert "Chain intact" in page.inner_text("#chain-badge")

    # Someone with the database file rewrites one decision.
    database = sqlite3.connect(served.data_dir / "kubewrit.db")
    seq, body = database.execute(
        "SELECT seq, body FROM records WHERE decision = 'PERMIT' ORDER BY seq LIMIT 1 OFFSET 1"
    ).fetchone()
    forged = {**json.loads(body), "decision": "DENY"}
    database.execute(
        "UPDATE records SET body = ?, decision = 'DENY' WHERE seq = ?", (json.dumps(forged), seq)
    )
    database.commit()
    database.close()

    page.reload()
    badge = page.locator("#chain-badge")
    assert f"Chain broken at seq {seq}" in badge.inner_text()
    assert "modified" in badge.inner_text()
    colour = badge.evaluate("e => getComputedStyle(e).color")
    assert colour == "rgb(179, 38, 30)", colour  # red
    # The same verdict as `kubewrit verify`.
    verify = served.kubewrit("verify", check=False)
    assert verify.returncode == 1 and f"seq {seq}: modified" in verify.stdout


ATTACKS = {
    "note": "<script>window.__xss.push('script')</script>",
    "image": "<img src=x onerror=\"window.__xss.push('onerror')\">",
    "link": "javascript:window.__xss.push('url')",
    "payee": "pay\u200bpal\u2060.com",
    "memo": "refund for \u202egnp.exe\u202c order",
    "<b onmouseover=\"window.__xss.push('key')\">key</b>": "v",
}


def test_attacker_written_arguments_are_shown_as_text(served: Server, pages: Pages) -> None:
    page = pages.new()
    sign_in(page, served, "approver")
    page.wait_for_url(f"{served.url}/ui/")
    blob = "A" * 3000  # one unbroken 3 KB word
    held = served.decide(
        tool="process_refund", args={"amount": 400, "blob": blob, **ATTACKS}
    ).json()
    assert held["decision"] == "DEFER"
    card = card_of(page, held["approval"]["id"])
    card.wait_for(timeout=10_000)

    cells = {
        row.locator("th").inner_text(): row.locator("td").inner_text()
        for row in card.locator("table.args tr").all()
        if row.locator("th").inner_text() != "blob"
    }
    assert cells["note"] == ATTACKS["note"]
    assert cells["image"] == ATTACKS["image"]
    assert cells["link"] == ATTACKS["link"]
    assert "<b onmouseover=\"window.__xss.push('key')\">key</b>" in cells
    # Invisible and reordering characters are replaced by markers naming them.
    assert cells["payee"] == "payU+200BpalU+2060.com"
    assert cells["memo"] == "refund for U+202Egnp.exeU+202C order"
    html = card.inner_html()
    assert "\u200b" not in html and "\u202e" not in html and "\u2060" not in html
    assert card.locator("script, img, b, a[href^='javascript']").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    blob_cell = card.locator("table.args tr", has_text="blob").locator("details")
    assert "3000 characters" in blob_cell.locator("summary").inner_text()  # folded
    blob_cell.locator("summary").click()
    assert blob in blob_cell.inner_text()
    no_horizontal_scroll(page)
    marker = card.locator(".hidden-char").first
    assert marker.get_attribute("title") == "ZERO WIDTH SPACE"
    card.hover()
    no_script_ran(page)
    screenshot(page, "console-hostile-arguments")

    # The same text on the approval's own page and in the playground.
    page.goto(f"{served.url}/ui/approvals/{held['approval']['id']}")
    page.locator("table.args").wait_for()
    no_script_ran(page)
    page.goto(f"{served.url}/ui/playground")
    action = {
        "agent": "support-agent",
        "tool": "process_refund",
        "args": {"amount": 400, **ATTACKS},
    }
    page.fill("#action", json.dumps(action))
    page.click("button.primary")
    assert page.inner_text("#verdict-decision") == "DEFER"
    no_script_ran(page)
    assert pages.problems == []


def test_the_playground_decides_without_recording(served: Server, pages: Pages) -> None:
    page = pages.new()
    sign_in(page, served, "approver")
    page.goto(f"{served.url}/ui/playground")
    before = served.get("/v1/records", as_="approver").json()["items"]
    page.fill(
        "#action",
        json.dumps({"agent": "support-agent", "tool": "process_refund", "args": {"amount": 1200}}),
    )
    page.click("button.primary")
    assert page.inner_text("#verdict-decision") == "DENY"
    assert page.inner_text("#verdict-rule") == "support-agent/large-refunds"
    verdict = page.inner_text("#verdict")
    assert "Refunds above $1000" in verdict
    assert "high — support-agent/large-financial-action" in verdict  # the risk rule
    trace = page.locator(".trace-rules > li")
    assert "small-refunds" in trace.nth(0).inner_text()
    assert "failed" in trace.nth(0).inner_text() and "amount ≤ 150" in trace.nth(0).inner_text()
    assert "matched" in trace.nth(2).inner_text()
    page.fill(
        "#action",
        json.dumps({"agent": "support-agent", "tool": "process_refund", "args": {"amount": 700}}),
    )
    page.click("button.primary")
    assert page.inner_text("#verdict-decision") == "DEFER"
    assert "large-financial-action" in page.inner_text("#verdict")
    screenshot(page, "console-playground")
    page.fill(
        "#action",
        '{"agent": "support-agent", "tool": "process_refund", "args": {"amount": "5,000"}}',
    )
    page.click("button.primary")
    assert page.inner_text("#verdict-decision") == "DENY"
    assert "type mismatch" in page.inner_text("#verdict")
    page.fill("#action", "{not json")
    page.click("button.primary")
    assert page.locator("#verdict [role=alert]").count() == 1
    after = served.get("/v1/records", as_="approver").json()["items"]
    assert after == before  # nothing recorded
    assert served.get("/v1/approvals", as_="approver").json() == []

    page.goto(f"{served.url}/ui/policies")
    text = page.inner_text("main")
    assert "support-agent" in text and "enforce" in text and "mid-range-refunds" in text
    policy_hash = served.get("/readyz").json()["policies"][0]["hash"]
    assert page.inner_text(".policy-hash") == policy_hash
    # A broken edit is refused and the page says why; the previous policy keeps serving.
    (served.policies / "support-agent.yaml").write_text("rules: [{match: {tool: x}}]\n")
    page.wait_for_timeout(100)
    for _ in range(50):
        page.reload()
        if page.locator("#reload-error").count():
            break
        page.wait_for_timeout(200)
    assert "support-agent.yaml" in page.inner_text("#reload-error")
    assert page.inner_text(".policy-hash") == policy_hash


def test_state_changes_need_the_session_csrf_token(served: Server, pages: Pages) -> None:
    page = pages.new()
    sign_in(page, served, "approver")
    page.wait_for_url(f"{served.url}/ui/")
    approval_id = served.decide(tool="process_refund", args={"amount": 300}).json()["approval"][
        "id"
    ]
    decide = f"{served.url}/ui/approvals/{approval_id}/decide"
    # The browser's cookie is sent, but the form's token is not: refused.
    forged = page.request.post(decide, form={"decision": "approve"}, max_redirects=0)
    assert forged.status == 403
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    cross_site = page.request.post(
        decide,
        form={"decision": "approve", "csrf": csrf},
        headers={"Origin": "http://evil.example"},
        max_redirects=0,
    )
    assert cross_site.status == 403
    assert served.get(f"/v1/approvals/{approval_id}", as_="approver").json()["phase"] == "Pending"
    # Without a session, nothing: the console sends the browser to sign in.
    anonymous = httpx.post(decide, data={"decision": "approve", "csrf": csrf})
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/ui/login"
    # Every console response carries the strict policy.
    headers = httpx.get(f"{served.url}/ui/login").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert served.get(f"/v1/approvals/{approval_id}", as_="approver").json()["phase"] == "Pending"


def test_an_expired_approval_cannot_be_decided_and_the_page_says_why(
    tmp_path: Path, pages: Pages
) -> None:
    server = start_server(tmp_path, "--approval-ttl", "3")
    try:
        page = pages.new()
        sign_in(page, server, "approver")
        page.wait_for_url(f"{server.url}/ui/")
        approval_id = server.decide(tool="process_refund", args={"amount": 200}).json()["approval"][
            "id"
        ]
        stale = pages.new()
        sign_in(stale, server, "approver")
        stale.goto(f"{server.url}/ui/approvals/{approval_id}")
        card = card_of(page, approval_id)
        card.wait_for()
        # The countdown reaches zero, the buttons go inert, and the queue shows it Expired.
        page.wait_for_function(
            "id => document.querySelector('#approval-' + id + ' .phase')?.textContent === 'Expired'",
            arg=approval_id,
            timeout=15_000,
        )
        assert page.locator("#queue-empty").count() == 1
        # A tab opened before expiry has gone inert too; one whose clock lags tries anyway:
        # the server refuses and says why.
        assert stale.locator("button[value=approve]").is_disabled()
        # Enabled and clicked in one step: the page's countdown disables it again each second.
        stale.evaluate(
            "() => { const b = document.querySelector('button[value=approve]');"
            " b.disabled = false; b.click(); }"
        )
        refusal = card_of(stale, approval_id).locator("[role=alert]")
        refusal.wait_for()
        assert "expired" in refusal.inner_text().lower()  # "has expired" or "already Expired"
        assert "nobody decided in time" in stale.inner_text(".final-reason")
        assert (
            server.get(f"/v1/approvals/{approval_id}", as_="approver").json()["phase"] == "Expired"
        )
    finally:
        server.stop()
