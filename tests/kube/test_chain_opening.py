"""A webhook replica opens one chain per namespace on its first decision there. Opening
reads the API (where the replica's last chain in that namespace ended) and writes a
genesis; namespaces open side by side, so one whose reads are slow holds up no other, and
two first decisions in one namespace still open exactly one chain."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from kubewrit.webhook import keys
from kubewrit.webhook.chain import Head, Record
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube.records import ActionRecordLedger, RecorderPool
from kubewrit.webhook.recorder import AnchorPolicy, RecordUnavailable

from .conftest import fresh_namespace
from .conftest_operator import apply_crds
from .test_record_creates import permit


@pytest.fixture
def second_namespace(control_plane) -> Iterator[str]:
    with fresh_namespace(control_plane) as name:
        yield name


def geneses(control_plane, namespace: str) -> list[str]:
    listing = control_plane.kubectl(
        "get",
        "actionrecords",
        "-n",
        namespace,
        "-l",
        f"{kube_api.LABEL_KIND}=genesis",
        "-o",
        "json",
    )
    return [item["spec"]["chain"] for item in json.loads(listing.stdout)["items"]]


def test_a_namespace_slow_to_open_holds_up_no_other_and_opens_one_chain(
    monkeypatch: pytest.MonkeyPatch, control_plane, kube_namespace, second_namespace
) -> None:
    apply_crds(control_plane)
    ledger = ActionRecordLedger(control_plane.api_client, kube_namespace)
    reading, release = threading.Event(), threading.Event()
    latest_head = ledger.latest_head

    def slow_in_home(lineage: str, namespace: str) -> Head | None:
        if namespace == kube_namespace:  # the API answers this namespace slowly
            reading.set()
            assert release.wait(30)
        return latest_head(lineage, namespace)

    monkeypatch.setattr(ledger, "latest_head", slow_in_home)
    signer = keys.generate()
    pool = RecorderPool(ledger, signer, "replica-a", AnchorPolicy(), signer.verifier.b64)

    async def first_decisions() -> tuple[Record, list[Record]]:
        slow = [asyncio.create_task(pool.record(permit(kube_namespace))) for _ in range(3)]
        assert await asyncio.to_thread(reading.wait, 10)
        fast = await asyncio.wait_for(pool.record(permit(second_namespace)), 10)
        assert not any(task.done() for task in slow)  # still waiting for their chain
        release.set()
        return fast, await asyncio.gather(*slow)

    try:
        fast, slow = asyncio.run(first_decisions())
    finally:
        release.set()
        pool.stop()

    assert geneses(control_plane, second_namespace) == [fast.chain]
    assert geneses(control_plane, kube_namespace) == [slow[0].chain]
    assert {record.chain for record in slow} == {slow[0].chain}
    assert sorted(record.seq for record in slow) == [1, 2, 3]  # after the genesis, seq 0


def test_a_stopped_pool_opens_no_chain(control_plane, kube_namespace) -> None:
    apply_crds(control_plane)
    ledger = ActionRecordLedger(control_plane.api_client, kube_namespace)
    signer = keys.generate()
    pool = RecorderPool(ledger, signer, "replica-b", AnchorPolicy(), signer.verifier.b64)
    pool.stop()
    with pytest.raises(RecordUnavailable, match="stopping"):
        asyncio.run(pool.record(permit(kube_namespace)))
    assert geneses(control_plane, kube_namespace) == []
