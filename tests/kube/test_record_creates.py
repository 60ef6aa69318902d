"""ActionRecords are created through libcurl (`kube.creates`) exactly as the API client is
configured: its CA, its server name, its proxy, its token as it is now. Anything else
fails closed (the write fails, nothing is stored), on the real API server."""

from __future__ import annotations

import copy
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubewrit.webhook import keys
from kubewrit.webhook.chain import Draft, Head, Record
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import records
from kubewrit.webhook.kube.creates import TransportError
from kubewrit.webhook.kube.records import ActionRecordLedger, object_name
from kubewrit.webhook.recorder import PartialWrite

from .conftest import make_tls
from .conftest_operator import apply_crds


def permit(namespace: str) -> Draft:
    return Draft(
        kind="decision",
        decision="PERMIT",
        reason="rule_matched",
        agent="support-agent",
        tool="process_refund",
        action_hash="sha256:" + "ab" * 32,
        namespace=namespace,
    )


def sealed(namespace: str, count: int = 1) -> list[Record]:
    head, signer = Head(f"creates-{uuid.uuid4().hex[:8]}"), keys.generate()
    return [head.seal_next(permit(namespace), signer) for _ in range(count)]


def stored(control_plane, namespace: str) -> list[str]:
    listing = control_plane.kubectl("get", "actionrecords", "-n", namespace, "-o", "json")
    return sorted(item["metadata"]["name"] for item in json.loads(listing.stdout)["items"])


def ledger_with(control_plane, namespace: str, **settings: object) -> ActionRecordLedger:
    """A ledger whose API client is the admin's, with `settings` changed on a copy."""
    configuration = copy.copy(control_plane.api_client.configuration)
    for name, value in settings.items():
        setattr(configuration, name, value)
    return ActionRecordLedger(client.ApiClient(configuration), namespace)


@pytest.fixture(autouse=True, scope="module")
def crds(control_plane) -> None:
    apply_crds(control_plane)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def test_a_batch_is_created_and_a_record_already_stored_as_sealed_counts_as_created(
    control_plane, kube_namespace
):
    ledger = ActionRecordLedger(control_plane.api_client, kube_namespace)
    records = sealed(kube_namespace, 5)
    ledger.write(records, kube_namespace)
    ledger.write(records[:2], kube_namespace)  # a retry whose first answer was lost: 409, same hash
    assert stored(control_plane, kube_namespace) == sorted(object_name(r) for r in records)


def test_another_record_under_a_stored_name_is_a_failed_write(control_plane, kube_namespace):
    ledger = ActionRecordLedger(control_plane.api_client, kube_namespace)
    first = sealed(kube_namespace, 1)
    ledger.write(first, kube_namespace)
    impostor = Record.from_dict({**first[0].to_dict(), "hash": "sha256:" + "00" * 32})
    with pytest.raises(PartialWrite) as failed:
        ledger.write([impostor], kube_namespace)
    assert failed.value.written == 0
    assert "exists with other content" in str(failed.value.cause)


def test_a_field_the_installed_crd_does_not_know_fails_the_write_and_stores_nothing(
    control_plane, kube_namespace, monkeypatch
):
    """A webhook newer than its CRDs (Helm installs a chart's CRDs but never upgrades them)
    writes a field the CRD does not know. Pruned, the record would stand without a field
    its signature covers while the decision was answered as recorded; refused, the write
    fails, and the decision with it."""
    spec_of = records.to_spec
    monkeypatch.setattr(records, "to_spec", lambda record: {**spec_of(record), "verdict": "x"})
    ledger = ActionRecordLedger(control_plane.api_client, kube_namespace)
    with pytest.raises(PartialWrite) as refused:
        ledger.write(sealed(kube_namespace, 2), kube_namespace)
    assert refused.value.written == 0
    cause = refused.value.cause
    assert isinstance(cause, client.ApiException) and cause.status == 400
    assert 'unknown field "spec.verdict"' in json.loads(cause.body)["message"]
    assert stored(control_plane, kube_namespace) == []


def test_the_api_server_is_reached_under_its_tls_server_name(control_plane, kube_namespace):
    ledger = ledger_with(control_plane, kube_namespace, tls_server_name="kubernetes.default.svc")
    records = sealed(kube_namespace, 3)
    ledger.write(records, kube_namespace)
    assert stored(control_plane, kube_namespace) == sorted(object_name(r) for r in records)


def test_a_server_name_the_certificate_does_not_name_stores_nothing(control_plane, kube_namespace):
    ledger = ledger_with(control_plane, kube_namespace, tls_server_name="impostor.example")
    with pytest.raises(PartialWrite) as failed:
        ledger.write(sealed(kube_namespace, 2), kube_namespace)
    assert failed.value.written == 0
    assert isinstance(failed.value.cause, TransportError)
    assert stored(control_plane, kube_namespace) == []


def test_an_api_server_the_configured_ca_did_not_sign_stores_nothing(
    control_plane, kube_namespace, tmp_path: Path
):
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(make_tls(tmp_path).ca_pem)
    ledger = ledger_with(control_plane, kube_namespace, ssl_ca_cert=str(other_ca))
    with pytest.raises(PartialWrite) as failed:
        ledger.write(sealed(kube_namespace), kube_namespace)
    assert isinstance(failed.value.cause, TransportError)
    assert stored(control_plane, kube_namespace) == []


def test_the_configured_proxy_is_used_unless_no_proxy_names_the_server(
    control_plane, kube_namespace, closed_port
):
    proxy = f"http://127.0.0.1:{closed_port}"
    through_proxy = ledger_with(control_plane, kube_namespace, proxy=proxy)
    with pytest.raises(PartialWrite) as failed:
        through_proxy.write(sealed(kube_namespace), kube_namespace)
    assert isinstance(failed.value.cause, TransportError)
    assert stored(control_plane, kube_namespace) == []

    bypassed = ledger_with(control_plane, kube_namespace, proxy=proxy, no_proxy="127.0.0.1")
    records = sealed(kube_namespace)
    bypassed.write(records, kube_namespace)
    assert stored(control_plane, kube_namespace) == [object_name(records[0])]


def test_the_bearer_token_is_read_again_for_every_batch(control_plane, kube_namespace):
    """A rotated service-account token is used from the next batch on."""
    control_plane.kubectl("create", "serviceaccount", "writer", "-n", kube_namespace)
    control_plane.kubectl(
        "create", "rolebinding", "writer", "--clusterrole=edit",
        f"--serviceaccount={kube_namespace}:writer", "-n", kube_namespace,
    )  # fmt: skip
    control_plane.kubectl(
        "create", "clusterrole", f"records-{kube_namespace}",
        "--verb=create,get", "--resource=actionrecords.kubewrit.io",
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "writer-records", f"--clusterrole=records-{kube_namespace}",
        f"--serviceaccount={kube_namespace}:writer", "-n", kube_namespace,
    )  # fmt: skip
    token = control_plane.kubectl("create", "token", "writer", "-n", kube_namespace).stdout.strip()
    configuration = copy.copy(control_plane.api_client.configuration)
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    ledger = ActionRecordLedger(client.ApiClient(configuration), kube_namespace)
    first = sealed(kube_namespace)
    ledger.write(first, kube_namespace)

    configuration.api_key = {"authorization": "Bearer not-a-token"}
    with pytest.raises(PartialWrite) as failed:
        ledger.write(sealed(kube_namespace), kube_namespace)
    assert isinstance(failed.value.cause, client.ApiException)
    assert failed.value.cause.status == 401

    configuration.api_key = {"authorization": f"Bearer {token}"}
    again = sealed(kube_namespace)
    ledger.write(again, kube_namespace)
    assert stored(control_plane, kube_namespace) == sorted(object_name(r) for r in [*first, *again])
    control_plane.kubectl("delete", "clusterrole", f"records-{kube_namespace}")


def test_kube_api_load_gives_a_ledger_that_creates(control_plane, kube_namespace):
    """The webhook's own way of building its client (a kubeconfig with a client cert)."""
    api = kube_api.load(control_plane.kubeconfig_for("admin"))
    records = sealed(kube_namespace, 2)
    ActionRecordLedger(api, kube_namespace).write(records, kube_namespace)
    assert stored(control_plane, kube_namespace) == sorted(object_name(r) for r in records)
