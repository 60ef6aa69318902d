"""The CRDs must hold every field kubewrit writes: the API server prunes the rest silently."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubewrit.webhook.chain import Record
from kubewrit.webhook.kube.records import SPEC_FIELDS

CRDS = Path(__file__).resolve().parents[2] / "crds"


def spec_properties(name: str) -> set[str]:
    crd = yaml.safe_load((CRDS / f"{name}.kubewrit.io.yaml").read_text())
    return set(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    )


def test_action_record_schema_holds_every_record_field() -> None:
    assert set(SPEC_FIELDS) == set(Record.__dataclass_fields__)
    assert set(SPEC_FIELDS.values()) == spec_properties("actionrecords")


def test_action_approval_schema_holds_every_spec_field() -> None:
    from kubewrit.webhook.approval import Approval
    from kubewrit.webhook.kube.approvals import to_object

    approval = Approval(
        id="apr-1",
        agent="a",
        tool="t",
        action_hash="h",
        action={"operation": "op"},
        rule="p/r",
        risk="low",
        reason="r",
        message="m",
        policy_hash="ph",
        created_at=0,
        expires_at=0,
        request_id="q",
        namespace="ns",
    )
    assert set(to_object(approval)["spec"]) <= spec_properties("actionapprovals")


def test_action_record_schema_keeps_every_limit_entry_field() -> None:
    """A field the schema lacks is pruned by the API server, and the record's hash breaks."""
    from decimal import Decimal

    from kubewrit.webhook.budget import LimitEntry

    document = yaml.safe_load((CRDS / "actionrecords.kubewrit.io.yaml").read_text())
    spec = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    item = spec["properties"]["limits"]["items"]["properties"]
    one = Decimal(1)
    written = LimitEntry("p/l", "[]", one, one, one, 60, "deny", exceeded=True).to_dict()
    assert set(written) == set(item)
