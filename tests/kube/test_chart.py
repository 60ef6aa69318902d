"""The Helm chart: lints, installs into a real API server, and its RBAC is enough for the
operator (run here as the chart's own ServiceAccount; pods never start: there are no nodes)."""

from __future__ import annotations

import copy
import filecmp
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.conftest_operator import REPO, start_operator, wait_until

pytestmark = pytest.mark.kube

CHART = REPO / "charts" / "kubewrit"


def test_chart_crds_are_the_repository_crds():
    repo = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart == repo
    different = [
        name
        for name in repo
        if not filecmp.cmp(REPO / "crds" / name, CHART / "crds" / name, shallow=False)
    ]
    assert not different, (
        f"charts/kubewrit/crds is stale: cp crds/*.yaml charts/kubewrit/crds/ ({different})"
    )


def test_helm_lint(control_plane):
    r = control_plane.helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in r.stdout


def test_the_optional_network_policy_and_service_monitor_render_and_lint(control_plane):
    values = ["--set", "networkPolicy.enabled=true", "--set", "serviceMonitor.enabled=true"]
    r = control_plane.helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in r.stdout
    kinds = [
        doc["kind"]
        for doc in yaml.safe_load_all(
            control_plane.helm("template", "kw", str(CHART), *values).stdout
        )
        if doc
    ]
    assert "NetworkPolicy" in kinds and "ServiceMonitor" in kinds


def test_retention_refuses_an_ephemeral_sink_unless_told(control_plane):
    """Exporting to an emptyDir and deleting from etcd would lose records with the pod."""
    refused = control_plane.helm(
        "template", "kw", str(CHART), "--set", "operator.retention.maxAge=30d", check=False
    )
    assert refused.returncode != 0
    assert "sinkVolume to durable storage" in refused.stderr
    durable = "operator.retention.sinkVolume.persistentVolumeClaim.claimName=kubewrit-records"
    for extra in (
        ["--set", "operator.retention.sinkVolume.emptyDir=null", "--set", durable],
        ["--set", "operator.retention.allowEphemeralSink=true"],
    ):
        control_plane.helm(
            "template", "kw", str(CHART), "--set", "operator.retention.maxAge=30d", *extra
        )


@pytest.fixture
def release(control_plane: Any) -> Iterator[tuple[str, str]]:
    name, namespace = f"kw{uuid.uuid4().hex[:6]}", f"kubewrit-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.helm(
        "install",
        name,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "operator.retention.maxCount=5",
        "--set",
        "operator.retention.allowEphemeralSink=true",
    )
    yield name, namespace
    # No pods run without a node: the post-delete hook Job would never finish
    # (tests/cluster runs the real uninstall).
    control_plane.helm("uninstall", name, "-n", namespace, "--no-hooks", check=False)
    control_plane.delete_namespace(namespace)


def objects(control_plane: Any, kind: str, namespace: str | None = None) -> set[str]:
    args = ["get", kind, "-o", "json"] + (["-n", namespace] if namespace else [])
    return {i["metadata"]["name"] for i in json.loads(control_plane.kubectl(*args).stdout)["items"]}


def token_kubeconfig(control_plane: Any, namespace: str, sa: str, path: Path) -> Path:
    token = control_plane.kubectl(
        "create", "token", sa, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": control_plane.server,
                            "certificate-authority": str(control_plane.ca_file),
                        },
                    }
                ],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
            }
        )
    )
    return path


def test_helm_install_creates_everything_and_rbac_suffices(control_plane, release, tmp_path):
    name, namespace = release
    full = f"{name}-kubewrit"
    assert {f"{full}-webhook", f"{full}-operator"} <= objects(
        control_plane, "deployments", namespace
    )
    assert {f"{full}-webhook", f"{full}-operator"} <= objects(control_plane, "services", namespace)
    assert {f"{full}-webhook", f"{full}-operator"} <= objects(
        control_plane, "serviceaccounts", namespace
    )
    assert {f"{full}-webhook-tls", f"{full}-operator-tls"} <= objects(
        control_plane, "secrets", namespace
    )
    assert {f"{full}-webhook", f"{full}-operator"} <= objects(control_plane, "clusterroles")
    assert {f"{full}-webhook", f"{full}-operator"} <= objects(control_plane, "clusterrolebindings")
    assert f"{full}-operator-leader-election" in objects(control_plane, "roles", namespace)
    assert {
        "agentpolicies.kubewrit.io",
        "actionapprovals.kubewrit.io",
        "actionrecords.kubewrit.io",
    } <= objects(control_plane, "crds")
    deploy = json.loads(
        control_plane.kubectl(
            "get", "deployment", f"{full}-operator", "-n", namespace, "-o", "json"
        ).stdout
    )
    env = {
        e["name"]: e.get("value")
        for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBEWRIT_OPERATOR_RETENTION_MAX_COUNT"] == "5"
    assert env["KUBEWRIT_OPERATOR_WEBHOOK_SERVICE"] == f"{namespace}/{full}-operator:443"

    def can(verb: str, resource: str, sa: str, ns: str | None = None) -> bool:
        resource, _, sub = resource.partition("/")
        args = [
            "auth",
            "can-i",
            verb,
            resource,
            f"--as=system:serviceaccount:{namespace}:{sa}",
            *([f"--subresource={sub}"] if sub else []),
        ]
        r = control_plane.kubectl(*args, *(["-n", ns] if ns else ["-A"]), check=False)
        return r.stdout.strip() == "yes"

    webhook_sa, operator_sa = f"{full}-webhook", f"{full}-operator"
    assert can("create", "tokenreviews.authentication.k8s.io", webhook_sa)
    assert can("create", "actionrecords.kubewrit.io", webhook_sa)
    assert can("update", "actionapprovals.kubewrit.io/status", webhook_sa)
    assert not can("delete", "actionrecords.kubewrit.io", webhook_sa)
    assert can("delete", "actionrecords.kubewrit.io", operator_sa)
    assert can("update", "leases.coordination.k8s.io", operator_sa, namespace)
    assert not can("update", "leases.coordination.k8s.io", operator_sa, "default")
    # Anchors, cuts and keys live in the release namespace: ConfigMap writes there only.
    for sa in (webhook_sa, operator_sa):
        assert can("update", "configmaps", sa, namespace)
        assert not can("create", "configmaps", sa, "default")
        assert not can("update", "configmaps", sa, "default")

    # The operator, running with exactly the chart's RBAC, serves admission and status.
    kubeconfig = token_kubeconfig(control_plane, namespace, operator_sa, tmp_path / "kc")
    watched = f"chart-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", watched)
    op = start_operator(
        control_plane,
        tmp_path,
        "--kubeconfig",
        str(kubeconfig),
        "--retention-max-count",
        "5",
        "--lease-namespace",
        namespace,
        "--retention-sink",
        str(tmp_path / "sink.jsonl"),
        namespaces=(watched,),
    )
    try:
        policy = {
            "apiVersion": "kubewrit.io/v1alpha1",
            "kind": "AgentPolicy",
            "metadata": {"name": "p", "namespace": watched},
            "spec": {
                "rules": [{"id": "x", "match": {"tool": "t", "amount_gt": "?"}, "allow": True}]
            },
        }
        r = control_plane.kubectl("apply", "-f", "-", input=json.dumps(policy), check=False)
        assert r.returncode != 0 and "rule 1 (x)" in r.stderr, r.stderr
        policy["spec"]["rules"][0]["match"] = {"tool": "t"}
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(policy))
        wait_until(
            lambda: (
                control_plane.kubectl(
                    "get",
                    "agentpolicy",
                    "p",
                    "-n",
                    watched,
                    "-o",
                    "jsonpath={.status.conditions[0].status}",
                ).stdout
                == "True"
            ),
            what="Ready",
        )
        wait_until(lambda: "now leading" in op.log(), what="the lease")
        assert "Forbidden" not in op.log() and "forbidden" not in op.log(), op.log()
    finally:
        op.stop()
        op.remove_webhook_configurations()
        control_plane.delete_namespace(watched)


def test_chart_runs_commands_the_cli_accepts(control_plane):
    """The Deployments' arguments are parsed by the real CLIs, so the chart cannot drift."""
    import click
    from kubewrit.operator.__main__ import parser as operator_parser
    from kubewrit.webhook.cli import main

    rendered = control_plane.helm("template", "kw", str(REPO / "charts" / "kubewrit")).stdout
    containers = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in yaml.safe_load_all(rendered)
        if d and d.get("kind") == "Deployment"
    }
    webhook = next(c for name, c in containers.items() if name.endswith("-webhook"))
    command = copy.deepcopy(main.get_command(click.Context(main), webhook["args"][0]))
    assert command is not None
    # Paths inside the pod do not exist here: check names and types, not the filesystem.
    for param in command.params:
        if isinstance(param.type, click.Path):
            param.type.exists = False
    command.make_context("webhook", list(webhook["args"][1:]))
    operator = next(c for name, c in containers.items() if name.endswith("-operator"))
    assert operator["command"][-1] == "kubewrit.operator"
    operator_parser().parse_args(operator["args"])
