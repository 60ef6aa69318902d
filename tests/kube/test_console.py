"""`kubewrit console` on Kubernetes, in a real browser: alice approves with her own kubeconfig,
bob's attempt shows the API server's refusal, and the agent's long-poll gets PERMIT."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubewrit.webhook.client.testing import free_port

from tests.browser import Pages, chromium, decided_card, no_script_ran, pages, screenshot  # noqa: F401  (fixtures)
from tests.kube.conftest_operator import (
    OperatorProcess,
    apply_crds,
    example_manifests,
    start_operator,
    wait_until,
)
from tests.kube.decision_webhook import DecisionWebhook, start_webhook

pytestmark = pytest.mark.kube


@dataclass
class ConsoleProcess:
    url: str
    code: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_console(control_plane: Any, user: str, namespace: str, workdir: Path) -> ConsoleProcess:
    """`kubewrit console` as `user`, the way an approver starts it on their laptop."""
    port = free_port()
    log = workdir / f"console-{user}.log"
    process = subprocess.Popen(
        [
            shutil.which("kubewrit") or "kubewrit",
            "console",
            "--kubeconfig",
            str(control_plane.kubeconfig_for(user)),
            "-n",
            namespace,
            "--port",
            str(port),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kubewrit console exited:\n{log.read_text()}")
        lines = log.read_text().splitlines()
        try:
            ready = len(lines) >= 3 and httpx.get(f"{url}/ui/login").status_code == 200
        except httpx.TransportError:
            ready = False
        if ready:
            if user not in lines[0]:  # who the API server says the kubeconfig is
                process.kill()
                raise AssertionError(f"kubewrit console is not acting as {user}: {lines}")
            return ConsoleProcess(url, lines[2].strip(), process, log)
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"kubewrit console did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def shop(control_plane: Any) -> Iterator[str]:
    apply_crds(control_plane)
    namespace = f"console-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    yield namespace
    control_plane.delete_namespace(namespace)


@pytest.fixture(scope="module")
def operator(
    control_plane: Any, shop: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = start_operator(control_plane, tmp_path_factory.mktemp("operator"), namespaces=(shop,))
    yield op
    op.stop()
    op.remove_webhook_configurations()


@pytest.fixture(scope="module")
def webhook(
    control_plane: Any,
    operator: OperatorProcess,
    shop: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DecisionWebhook]:
    server = start_webhook(control_plane, tmp_path_factory.mktemp("webhook"), f"console-{shop}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def applied(control_plane: Any, operator: OperatorProcess, shop: str) -> str:
    """examples/kubernetes in the test's namespace, and bob allowed to see and patch approvals
    (RBAC says he may try; the policy's `approvers` do not list him)."""
    manifests = example_manifests(shop).replace("name: shop\n", f"name: {shop}\n")
    documents = [d for d in yaml.safe_load_all(manifests) if d and d.get("kind") != "Namespace"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    control_plane.kubectl(
        "create", "rolebinding", "bob-approver-rbac", "-n", shop,
        "--role=kubewrit-approver", "--user=bob",
    )  # fmt: skip
    wait_until(
        lambda: "True"
        in control_plane.kubectl(
            "get", "agentpolicy", "support-agent", "-n", shop,
            "-o", "jsonpath={.status.conditions[0].status}",
        ).stdout,
        what="the policy to be Ready",
    )  # fmt: skip
    return shop


def sign_in(page: Any, console: ConsoleProcess) -> None:
    page.goto(f"{console.url}/ui/")
    page.fill("#secret", console.code)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/ui/")


def test_alice_approves_through_kubewrit_console_and_bob_is_refused(
    control_plane: Any,
    applied: str,
    webhook: DecisionWebhook,
    pages: Pages,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    shop = applied
    alice = start_console(control_plane, "alice", shop, tmp_path)
    bob = start_console(control_plane, "bob", shop, tmp_path)
    try:
        alice_page, bob_page = pages.new(), pages.new()
        # A wrong code does not sign in.
        alice_page.goto(f"{alice.url}/ui/login")
        alice_page.fill("#secret", "not-the-code")
        alice_page.click("button[type=submit]")
        assert "not the access code" in alice_page.inner_text("#signin-error")
        sign_in(alice_page, alice)
        sign_in(bob_page, bob)
        assert alice_page.inner_text("#viewer") == "alice"
        assert bob_page.inner_text("#viewer") == "bob"
        alice_page.locator("#queue-empty").wait_for()
        alice_page.evaluate("window.__notReloaded = true")

        token = control_plane.kubectl(
            "create", "token", "support-agent", "-n", shop, "--audience", "kubewrit"
        ).stdout.strip()
        held = webhook.decide(token, tool="process_refund", args={"amount": 340}).json()
        assert held["decision"] == "DEFER"
        name = held["approval"]["id"]

        # The refund appears live in both queues.
        alice_card = alice_page.locator(f"#approval-{name}")
        alice_card.wait_for(timeout=15_000)
        assert alice_page.evaluate("window.__notReloaded") is True
        assert "340" in alice_card.inner_text() and "mid-range-refunds" in alice_card.inner_text()
        bob_card = bob_page.locator(f"#approval-{name}")
        bob_card.wait_for(timeout=15_000)

        # Bob may patch (RBAC) but is no approver: the operator's webhook refuses, in its words.
        bob_card.locator("button[value=approve]").click()
        refusal = bob_page.locator(f"#approval-{name} [role=alert]")
        refusal.wait_for()
        text = refusal.inner_text()
        assert "denied the request" in text and "bob" in text and "approver" in text, text
        kubectl_says = control_plane.kubectl(
            "annotate", "actionapproval", name, "-n", shop, "kubewrit.io/decision=approve",
            user="bob", check=False,
        )  # fmt: skip
        assert kubectl_says.returncode != 0
        assert kubectl_says.stderr.split("denied the request: ", 1)[1].strip() in text
        assert bob_page.locator(f"#approval-{name} form.decide").count() == 1  # still open
        screenshot(bob_page, "console-kube-refused")
        print("bob was refused:", text)

        # The agent waits; alice approves with a reason.
        outcome: dict[str, Any] = {}
        poll = threading.Thread(
            target=lambda: outcome.update(
                webhook.get(f"/v1/approvals/{name}", token, params={"wait": 40}).json()
            )
        )
        poll.start()
        alice_card.locator("input[name=reason]").fill("customer verified")
        alice_card.locator("button[value=approve]").click()
        poll.join(timeout=50)
        assert outcome["phase"] == "Consumed", outcome
        assert outcome["outcome"]["decision"] == "PERMIT" and outcome["outcome"]["writ"]
        stamped = control_plane.kubectl(
            "get", "actionapproval", name, "-n", shop,
            "-o", "jsonpath={.metadata.annotations.kubewrit\\.io/decided-by}",
        ).stdout  # fmt: skip
        assert stamped == "alice"

        # Alice's queue moves it to decided, by alice, with the record; the record names her.
        result = decided_card(alice_page, name)
        assert "PERMIT" in result.inner_text()
        assert "by alice" in result.inner_text() and "customer verified" in result.inner_text()
        alice_page.locator(f"#approval-{name} .record-link").click()
        alice_page.locator("#field-approver").wait_for()
        assert alice_page.inner_text("#field-approver") == "alice"
        # Alice's kubeconfig may not read the cluster's signing keys: the badge says so.
        assert "not verified" in alice_page.inner_text("#chain-badge")
        no_script_ran(alice_page)
        no_script_ran(bob_page)
        alice_page.context.close()  # before their consoles stop: no reconnect noise
        bob_page.context.close()
    finally:
        alice.stop()
        bob.stop()

    # The admin can read the anchors and keys: the same verification says intact.
    admin = start_console(control_plane, "admin", shop, tmp_path)
    try:
        page = pages.new()
        sign_in(page, admin)
        page.goto(f"{admin.url}/ui/records")
        assert "Chain intact" in page.inner_text("#chain-badge")
        assert "alice" in page.inner_text("table.records")
    finally:
        admin.stop()
    assert pages.problems == []
