"""The anchor and key ConfigMap formats: what the writers render, the readers read back."""

from __future__ import annotations

import json

from kubewrit.webhook import chain, keys
from kubewrit.webhook.chain import Cut, Draft
from kubewrit.webhook.kube import configmaps


def test_entries_round_trip() -> None:
    signer = keys.generate()
    record = chain.Head("w1").seal_next(Draft(kind="genesis"), signer)
    anchor = chain.sign_anchor(record, signer)
    cut = Cut(4, "a" * 64, "/sink", "2026-01-01T00:00:00Z")
    data = {
        **configmaps.anchor_entry(anchor),
        **configmaps.cut_entry("w1", cut),
        **configmaps.cut_entry("old", Cut(2, "b" * 64)),
    }
    parsed = configmaps.parse_anchors(data, "ConfigMap ns/kubewrit-anchors")
    assert parsed.anchors == [anchor] and parsed.problems == []
    assert parsed.cuts == {"w1": cut, "old": Cut(2, "b" * 64, "", "")}
    verifiers, problems = configmaps.parse_keys(
        configmaps.key_entry(signer.key_id, signer.verifier.b64), "ConfigMap ns/kubewrit-keys"
    )
    assert [v.key_id for v in verifiers] == [signer.key_id] and problems == []


def test_a_cut_written_before_exported_to_and_time_existed_still_reads() -> None:
    assert configmaps.parse_cut('{"seq": 3, "prev": "p"}') == Cut(3, "p")


def test_every_malformed_entry_is_named_and_the_rest_still_read() -> None:
    signer = keys.generate()
    anchor = chain.sign_anchor(chain.Head("w1").seal_next(Draft(kind="genesis"), signer), signer)
    good = configmaps.anchor_entry(anchor)
    data = {
        **good,
        "w2": "{not json",
        "w3": json.dumps({**anchor.to_dict(), "seq": "7"}),
        "w4": json.dumps(anchor.to_dict()),  # w1's anchor filed under another chain
        "w5": "[]",
        "w6.cut": '{"seq": "x", "prev": "p"}',
        "w7.cut": '{"prev": "p"}',
        "w8.cut": "null",
    }
    parsed = configmaps.parse_anchors(data, "ConfigMap ns/kubewrit-anchors")
    assert parsed.anchors == [anchor] and parsed.cuts == {}
    named = {problem.split("'")[1] for problem in parsed.problems}
    assert named == {"w2", "w3", "w4", "w5", "w6.cut", "w7.cut", "w8.cut"}
    assert all(p.startswith("ConfigMap ns/kubewrit-anchors key ") for p in parsed.problems)
    verifiers, problems = configmaps.parse_keys(
        {"k1": "not a key", "k2": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
        "ConfigMap ns/kubewrit-keys",
    )
    assert verifiers == [] and len(problems) == 2
