"""Where a chain of ActionRecords ends, found without reading the chain whole: a restarted
webhook names it in its new chain's genesis, and a writer in doubt reads what is stored
past its last acknowledged record. Both list only the days from a record known to be in
the chain (its anchor's, or the last acknowledged one) on."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubewrit.webhook import chain, keys
from kubewrit.webhook.chain import Head
from kubewrit.webhook.kube.records import ActionRecordLedger, name_of

from .conftest_operator import apply_crds
from .test_record_creates import permit

DAY = 86_400


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch, control_plane, kube_namespace) -> Any:
    """The ledger, and how many ActionRecords its listings have returned so far."""
    apply_crds(control_plane)
    ledger = ActionRecordLedger(control_plane.api_client, kube_namespace)
    seen = {"items": 0}
    list_objects = ledger.custom.list_namespaced_custom_object

    def counting(*args: Any, **kwargs: Any) -> Any:
        page = list_objects(*args, **kwargs)
        seen["items"] += len(page.get("items", []))
        return page

    monkeypatch.setattr(ledger.custom, "list_namespaced_custom_object", counting)
    return ledger, seen


def test_a_long_chain_s_end_is_found_from_its_anchor_without_reading_the_chain(
    listed, kube_namespace
) -> None:
    ledger, seen = listed
    signer, head = keys.generate(), Head(f"long-{uuid.uuid4().hex[:8]}")
    now = time.time()
    # 60 records a week ago, the anchored one an hour ago, then three since.
    old = [head.seal_next(permit(kube_namespace), signer, now=now - 7 * DAY + i) for i in range(60)]
    anchored = head.seal_next(permit(kube_namespace), signer, now=now - 3_600)
    recent = [head.seal_next(permit(kube_namespace), signer) for _ in range(3)]
    ledger.write([*old, anchored, *recent], kube_namespace)
    anchor = chain.sign_anchor(Head(head.chain, anchored.seq, anchored.hash), signer)
    ledger.publish_anchor(anchor, kube_namespace)

    found = ledger.head(head.chain, kube_namespace)
    assert found is not None and (found.seq, found.hash) == (recent[-1].seq, recent[-1].hash)
    assert seen["items"] == 4  # the anchored record and the three after it

    seen["items"] = 0
    after = ledger.after(head.chain, anchored.seq, kube_namespace)
    assert [r.hash for r in after] == [r.hash for r in recent]
    assert seen["items"] == 4


def test_without_a_record_to_date_it_the_chain_is_read_whole(
    listed, control_plane, kube_namespace
) -> None:
    ledger, seen = listed
    signer, head = keys.generate(), Head(f"unanchored-{uuid.uuid4().hex[:8]}")
    now = time.time()
    records = [
        head.seal_next(permit(kube_namespace), signer, now=now - 9 * DAY + i) for i in range(5)
    ]
    ledger.write(records, kube_namespace)
    # No anchor: the whole chain is read, and its end is the record with the highest seq.
    found = ledger.head(head.chain, kube_namespace)
    assert found is not None and found.seq == records[-1].seq
    assert seen["items"] == 5
    # The last acknowledged record is gone (deleted by hand): nothing dates what follows
    # it, so the chain is read whole rather than trusting a day guessed wrong.
    control_plane.kubectl("delete", "actionrecord", name_of(head.chain, 2), "-n", kube_namespace)
    seen["items"] = 0
    after = ledger.after(head.chain, 2, kube_namespace)
    assert [r.seq for r in after] == [3, 4]
    assert seen["items"] == 4
