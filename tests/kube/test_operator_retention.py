"""Retention under leader election, with two real operator replicas on one control plane.

Exactly one replica holds the Lease and runs retention: old records are exported
(JSON Lines), then deleted as a prefix of each chain, never across a broken link
and never the last record, and the cut is recorded in the anchor ConfigMap by
compare-and-swap without touching the writer's keys. When the leader goes, the
other replica takes over.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubewrit.webhook import keys
from kubewrit.webhook.chain import Cut, cut_valid

from tests.kube.conftest_operator import OperatorProcess, apply_crds, start_operator, wait_until

pytestmark = pytest.mark.kube

OLD = datetime.now(UTC) - timedelta(hours=2)
GENESIS = "0" * 64


def record(
    chain: str, seq: int, prev: str, when: datetime, hash_: str | None = None
) -> dict[str, Any]:
    spec = {
        "chain": chain,
        "seq": seq,
        "prev": prev,
        "hash": hash_ or f"{chain}-h{seq}",
        "kind": "genesis" if seq == 0 else "decision",
        "agent": "support-agent",
        "tool": "send_email",
        "decision": "PERMIT",
        "keyId": "k1",
        "signature": "sig",
        "time": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    return {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "ActionRecord",
        "metadata": {
            "name": f"{chain}-{seq:010d}",
            "labels": {
                "kubewrit.io/chain": chain,
                "kubewrit.io/agent": "support-agent",
                "kubewrit.io/decision": "PERMIT",
                "kubewrit.io/tool": "send_email",
            },
        },
        "spec": spec,
    }


def chain(
    name: str, count: int, old: int, broken_before: int | None = None, start: int = 0
) -> list[dict[str, Any]]:
    """`count` linked records, the first `old` of them two hours old; optionally one bad link."""
    out, prev = [], GENESIS if start == 0 else f"{name}-h{start - 1}"
    for seq in range(start, start + count):
        when = OLD + timedelta(seconds=seq) if seq - start < old else datetime.now(UTC)
        if seq == broken_before:
            prev = "tampered"
        out.append(record(name, seq, prev, when))
        prev = out[-1]["spec"]["hash"]
    return out


def create(control_plane: Any, namespace: str, records: list[dict[str, Any]]) -> None:
    control_plane.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": records}),
    )


def seqs(control_plane: Any, namespace: str) -> dict[str, list[int]]:
    items = json.loads(
        control_plane.kubectl("get", "actionrecords", "-n", namespace, "-o", "json").stdout
    )["items"]
    out: dict[str, list[int]] = {}
    for item in items:
        out.setdefault(item["spec"]["chain"], []).append(item["spec"]["seq"])
    return {k: sorted(v) for k, v in out.items()}


def anchors(control_plane: Any, namespace: str) -> dict[str, str]:
    """The anchors and cuts of `namespace`'s chains; these tests use it as kubewrit's home too."""
    return json.loads(
        control_plane.kubectl(
            "get", "configmap", f"kubewrit-anchors-{namespace}", "-n", namespace, "-o", "json"
        ).stdout
    )["data"]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def namespace(control_plane: Any) -> Iterator[str]:
    apply_crds(control_plane)
    name = f"ret-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.delete_namespace(name)


def replica(control_plane: Any, workdir: Path, namespace: str, identity: str) -> OperatorProcess:
    flags = (
        "--retention-max-age",
        "1h",
        "--retention-interval",
        "1s",
        "--retention-sink",
        str(workdir / f"{identity}.jsonl"),
        "--home-namespace",
        namespace,
        "--signing-key",
        str(workdir / f"{identity}.pem"),
        "--lease-name",
        "kubewrit-operator",
        "--lease-namespace",
        namespace,
        "--lease-duration",
        "4s",
        "--lease-renew-deadline",
        "3s",
        "--lease-retry-period",
        "0.5s",
    )
    return start_operator(
        control_plane, workdir, *flags, namespaces=(namespace,), admission=False, identity=identity
    )


def test_two_replicas_one_leader_exports_and_cuts_a_prefix(control_plane, namespace, tmp_path):
    create(
        control_plane,
        namespace,
        chain("a", 5, old=5)  # all old: 0..3 go, the last stays
        + chain("b", 5, old=3)  # 0..2 old
        + chain("c", 4, old=4, broken_before=2)  # link 1->2 broken: only seq 0 may go
        + chain("d", 1, old=1),
    )  # a lone record is never deleted
    # The decision webhook's signed head of chain a: retention must not clobber it.
    head = json.dumps({"chain": "a", "seq": 4, "hash": "a-h4", "signature": "s"})
    control_plane.kubectl(
        "create",
        "configmap",
        f"kubewrit-anchors-{namespace}",
        "-n",
        namespace,
        f"--from-literal=a={head}",
    )

    one = replica(control_plane, tmp_path, namespace, "replica-one")
    two = replica(control_plane, tmp_path, namespace, "replica-two")
    try:
        wait_until(
            lambda: seqs(control_plane, namespace).get("a") == [4],
            timeout=60,
            what="retention to cut chain a",
        )
        wait_until(
            lambda: (
                "c.cut" in anchors(control_plane, namespace)
                and "b.cut" in anchors(control_plane, namespace)
            ),
            what="the cuts",
        )
        lease = json.loads(
            control_plane.kubectl(
                "get", "lease", "kubewrit-operator", "-n", namespace, "-o", "json"
            ).stdout
        )
        holder = lease["spec"]["holderIdentity"]
        leader, follower = (one, two) if holder == one.identity else (two, one)
        assert holder == leader.identity
        assert f"{leader.identity} is now leading" in leader.log()
        assert "now leading" not in follower.log()
        assert "retention:" not in follower.log().replace("retention: max age", "")

        assert seqs(control_plane, namespace) == {"a": [4], "b": [3, 4], "c": [1, 2, 3], "d": [0]}
        exported = lines(tmp_path / f"{leader.identity}.jsonl")
        assert not (tmp_path / f"{follower.identity}.jsonl").exists()
        assert sorted((r["chain"], r["seq"]) for r in exported) == [
            ("a", 0),
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("b", 0),
            ("b", 1),
            ("b", 2),
            ("c", 0),
        ]
        assert exported[0]["keyId"] == "k1" and "spec" not in exported[0]  # specs, as stored

        data = anchors(control_plane, namespace)
        assert data["a"] == head  # untouched
        sink = str(tmp_path / f"{leader.identity}.jsonl")
        for name, seq in (("a", 4), ("b", 3), ("c", 1)):
            cut = json.loads(data[f"{name}.cut"])
            assert cut["seq"] == seq and cut["prev"] == f"{name}-h{seq - 1}"
            assert cut["exported_to"] == sink and cut["time"].endswith("Z")
            # signed by the leader's key, which it published where the webhook's keys are
            published = json.loads(
                control_plane.kubectl(
                    "get", "configmap", "kubewrit-keys", "-n", namespace, "-o", "json"
                ).stdout
            )["data"]
            signed = Cut.from_dict(cut)
            assert cut_valid(name, signed, keys.load_public(published[signed.key_id]))
            assert not cut_valid(
                "a" if name != "a" else "b", signed, keys.load_public(published[signed.key_id])
            )
        assert "d.cut" not in data

        # Stable: later passes find nothing more to do and export nothing twice.
        wait_until(lambda: leader.log().count("pass done") >= 3, what="more passes")
        assert len(lines(tmp_path / f"{leader.identity}.jsonl")) == 8

        # The leader goes away (releasing its lease): the other replica takes over.
        leader.stop()
        create(control_plane, namespace, chain("e", 3, old=3))
        wait_until(
            lambda: seqs(control_plane, namespace).get("e") == [2],
            timeout=30,
            what="the new leader to cut chain e",
        )
        assert f"{follower.identity} is now leading" in follower.log()
        taken = lines(tmp_path / f"{follower.identity}.jsonl")
        assert [(r["chain"], r["seq"]) for r in taken] == [("e", 0), ("e", 1)]
        lease = json.loads(
            control_plane.kubectl(
                "get", "lease", "kubewrit-operator", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        one.stop()
        two.stop()


class RacingCore:
    """CoreV1Api whose first replace loses a race: another writer updates the ConfigMap
    (as the decision webhook publishing its head would) between our read and our write."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace, self.raced = core, namespace, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def replace_namespaced_config_map(self, name: str, namespace: str, body: Any) -> Any:
        if not self.raced:
            self.raced = True
            fresh = self.core.read_namespaced_config_map(name, namespace)
            fresh.data = {**(fresh.data or {}), "a": '{"seq": 9}'}
            self.core.replace_namespaced_config_map(name, namespace, fresh)
        return self.core.replace_namespaced_config_map(name, namespace, body)


def test_the_cut_is_written_by_compare_and_swap(control_plane, namespace):
    from kubernetes import client
    from kubewrit.operator import Cut, read_cut, write_cut

    core = client.CoreV1Api(control_plane.api_client)
    control_plane.kubectl(
        "create",
        "configmap",
        f"kubewrit-anchors-{namespace}",
        "-n",
        namespace,
        '--from-literal=a={"seq": 8}',
    )
    racing = RacingCore(core, namespace)
    stored = write_cut(racing, namespace, namespace, "a", Cut(4, "a-h3", "/sink", "t"))  # type: ignore[arg-type]
    assert racing.raced and stored.seq == 4
    data = anchors(control_plane, namespace)
    assert data["a"] == '{"seq": 9}'  # the other writer's update survived our retry
    assert json.loads(data["a.cut"])["seq"] == 4
    # a cut never moves backwards
    assert write_cut(core, namespace, namespace, "a", Cut(2, "a-h1", "/sink", "t")).seq == 4
    assert read_cut(core, namespace, namespace, "a") == Cut(4, "a-h3", "/sink", "t")
    # and creates the ConfigMap where none exists yet
    control_plane.kubectl("delete", "configmap", f"kubewrit-anchors-{namespace}", "-n", namespace)
    assert write_cut(core, namespace, namespace, "z", Cut(1, "z-h0", "/sink", "t")).seq == 1
    assert json.loads(anchors(control_plane, namespace)["z.cut"])["prev"] == "z-h0"


def test_lease_election_is_exclusive_and_expires(control_plane, namespace):
    from kubewrit.operator import LeaderElector
    from kubewrit.operator.config import LeaderConfig

    now = [1000.0]

    def elector(identity: str) -> LeaderElector:
        config = LeaderConfig(
            name="unit-lease",
            namespace=namespace,
            identity=identity,
            lease_duration=10,
            renew_deadline=7,
            retry_period=1,
        )
        return LeaderElector(control_plane.api_client, config, clock=lambda: now[0])

    a, b = elector("a"), elector("b")
    assert a.try_acquire_or_renew() and a.leading
    assert not b.try_acquire_or_renew() and not b.leading
    now[0] += 5
    assert a.try_acquire_or_renew()  # renewing keeps it
    assert not b.try_acquire_or_renew()
    now[0] += 8  # a went quiet; b saw the renewal 8s ago
    assert not a.leading  # past a's renew deadline: a stops acting
    assert not b.try_acquire_or_renew()
    now[0] += 3  # 11s since b last saw a change: expired
    assert b.try_acquire_or_renew() and b.leading
    assert not a.try_acquire_or_renew()  # a's lease is gone, b's renewal is fresh to a
    lease = json.loads(
        control_plane.kubectl("get", "lease", "unit-lease", "-n", namespace, "-o", "json").stdout
    )
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.try_acquire_or_renew()  # a released lease is free at once
