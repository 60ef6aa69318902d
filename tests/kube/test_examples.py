"""Every example manifest applies cleanly to a real API server, and the walkthrough
AgentPolicy is exactly examples/policies/support-agent.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubewrit.webhook.policy import compile_document, load_paths

from tests.kube.conftest_operator import EXAMPLES, apply_crds

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]


def documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_the_walkthrough_policy_manifest_is_the_policy_file():
    manifest = next(d for d in documents() if d["kind"] == "AgentPolicy")
    assert manifest["metadata"] == {"name": "support-agent", "namespace": "shop"}
    from_manifest = compile_document(manifest, source="manifest")
    (from_file,) = load_paths([REPO / "examples/policies/support-agent.yaml"])
    assert from_manifest.hash == from_file.hash
    assert from_manifest.approvers.users == ("manager",)
    assert from_manifest.approvers.groups == ("kubewrit-approvers",)


def test_every_example_applies(control_plane):
    apply_crds(control_plane)
    try:
        for path in sorted(EXAMPLES.glob("*.yaml")):
            control_plane.kubectl("apply", "-f", str(path))
        # idempotent: applying the whole directory again changes nothing and fails nothing
        out = control_plane.kubectl("apply", "-f", str(EXAMPLES)).stdout
        assert all(line.endswith("unchanged") for line in out.splitlines()), out
        control_plane.kubectl("get", "agentpolicy", "support-agent", "-n", "shop")
        control_plane.kubectl("get", "serviceaccount", "support-agent", "-n", "shop")

        def can(user: str, verb: str, resource: str, *groups: str) -> bool:
            flags = [f"--as={user}", *(f"--as-group={g}" for g in groups)]
            r = control_plane.kubectl(
                "auth", "can-i", verb, resource, "-n", "shop", *flags, check=False
            )
            return r.stdout.strip() == "yes"

        for verb in ("get", "list", "watch", "patch", "update"):
            assert can("carol", verb, "actionapprovals.kubewrit.io", "kubewrit-approvers")
        assert can("carol", "list", "actionrecords.kubewrit.io", "kubewrit-approvers")
        assert not can("carol", "delete", "actionrecords.kubewrit.io", "kubewrit-approvers")
        assert can("manager", "patch", "actionapprovals.kubewrit.io")
        assert not can("bob", "patch", "actionapprovals.kubewrit.io", "kubewrit-users")
        # the agent may not touch its own approvals at all
        assert not can(
            "system:serviceaccount:shop:support-agent", "patch", "actionapprovals.kubewrit.io"
        )
    finally:
        # wait: a namespace still terminating would refuse the next session's apply
        control_plane.kubectl(
            "delete",
            "namespace",
            "shop",
            "--ignore-not-found",
            "--timeout=90s",
            check=False,
            timeout=120,
        )
