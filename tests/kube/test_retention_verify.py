"""Retention cuts a chain the webhook wrote; verification still passes across the cut."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.kube.conftest_operator import start_operator, wait_until
from tests.kube.decision_webhook import fresh_shop, start_webhook

pytestmark = pytest.mark.kube


def stored(control_plane: Any, namespace: str) -> list[dict[str, Any]]:
    listing = control_plane.kubectl("get", "actionrecords", "-n", namespace, "-o", "json").stdout
    return sorted((i["spec"] for i in json.loads(listing)["items"]), key=lambda s: s["seq"])


def test_verification_passes_across_a_retention_cut(control_plane: Any, tmp_path: Path) -> None:
    namespace = fresh_shop(control_plane, "retain")
    webhook = start_webhook(control_plane, tmp_path, f"retain-{namespace}")
    agent = control_plane.kubectl(
        "create", "token", "support-agent", "-n", namespace, "--audience", "kubewrit"
    ).stdout
    try:
        for amount in range(1, 13):  # the example policy permits no refund of 0
            answer = webhook.decide(agent.strip(), tool="process_refund", args={"amount": amount})
            assert answer.json()["decision"] == "PERMIT"
    finally:
        webhook.stop()  # publishes the final anchor
    assert len(stored(control_plane, namespace)) == 13  # genesis + 12 decisions

    sink = tmp_path / "exported.jsonl"
    operator = start_operator(
        control_plane,
        tmp_path / "operator",
        "--retention-max-count",
        "5",
        "--retention-interval",
        "1s",
        "--retention-sink",
        str(sink),
        namespaces=(namespace,),
        admission=False,
    )
    try:
        wait_until(
            lambda: len(stored(control_plane, namespace)) == 5,
            timeout=60,
            what="retention to keep the newest 5 records",
        )
    finally:
        operator.stop()
    remaining = stored(control_plane, namespace)
    assert [r["seq"] for r in remaining] == list(range(8, 13))
    assert len(sink.read_text().splitlines()) == 8

    kubeconfig = str(control_plane.kubeconfig_for("admin"))
    across_cut = run_cli("verify", "--kubeconfig", kubeconfig, "-n", namespace)
    assert "verified 5 records" in across_cut.stdout
    whole = run_cli("verify", "--kubeconfig", kubeconfig, "-n", namespace, "--export", str(sink))
    assert "verified 13 records" in whole.stdout
    cut_sink = tmp_path / "cut-sink.jsonl"
    cut_sink.write_text("".join(sink.read_text().splitlines(keepends=True)[:-2]))
    cut = run_cli(
        "verify",
        "--kubeconfig",
        kubeconfig,
        "-n",
        namespace,
        "--export",
        str(cut_sink),
        check=False,
    )
    assert cut.returncode == 1 and "seq 6: missing: record(s) 6-7 missing" in cut.stdout

    chain_id = remaining[0]["chain"]
    control_plane.kubectl(
        "patch",
        "configmap",
        f"kubewrit-anchors-{namespace}",
        "-n",
        "kubewrit-system",
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {chain_id: "{not json"}}),
    )
    malformed = run_cli("verify", "--kubeconfig", kubeconfig, "-n", namespace, check=False)
    assert malformed.returncode == 1 and "Traceback" not in malformed.stderr
    assert (
        f"bad input: malformed: ConfigMap kubewrit-system/kubewrit-anchors-{namespace} "
        f"key '{chain_id}': not JSON" in malformed.stdout
    ), malformed.stdout + malformed.stderr

    control_plane.kubectl(
        "delete", "actionrecord", f"{remaining[0]['chain']}-{8:010d}", "-n", namespace
    )
    broken = run_cli("verify", "--kubeconfig", kubeconfig, "-n", namespace, check=False)
    assert broken.returncode == 1 and "seq 8: missing" in broken.stdout
    control_plane.delete_namespace(namespace)
