"""The anchor ConfigMap (`kubewrit-anchors`): where retention records the cut of each chain.

The decision webhook writes each chain's signed head under `<chain>`; retention
writes `<chain>.cut` = where the retained chain now begins, so a verifier can
accept a chain that starts at seq k with the given prev hash. Both writers use
compare-and-swap on resourceVersion (replace, re-read on 409 Conflict), so
neither ever clobbers the other's keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from kubernetes import client
from kubewrit.webhook.kube import api as kube

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class Cut:
    """The first retained record of a chain after retention: its seq and its prev hash."""

    seq: int
    prev: str
    exported_to: str
    time: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def cut_key(chain: str) -> str:
    return f"{chain}.cut"


def read_cut(core: client.CoreV1Api, namespace: str, chain: str) -> Cut | None:
    try:
        cm = core.read_namespaced_config_map(kube.ANCHORS_CONFIGMAP, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw = (cm.data or {}).get(cut_key(chain))
    if not raw:
        return None
    data = json.loads(raw)
    return Cut(
        int(data["seq"]),
        str(data["prev"]),
        str(data.get("exported_to", "")),
        str(data.get("time", "")),
    )


def write_cut(core: client.CoreV1Api, namespace: str, chain: str, cut: Cut) -> Cut:
    """Record `cut` for `chain` by compare-and-swap; a cut never moves backwards.

    Returns the cut now stored (which is `cut`, or a later one another writer stored).
    """
    for _ in range(CAS_ATTEMPTS):
        try:
            cm: Any = core.read_namespaced_config_map(kube.ANCHORS_CONFIGMAP, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=kube.ANCHORS_CONFIGMAP,
                    namespace=namespace,
                    labels={"app.kubernetes.io/part-of": "kubewrit"},
                ),
                data={cut_key(chain): cut.to_json()},
            )
            try:
                core.create_namespaced_config_map(namespace, body)
                return cut
            except client.ApiException as race:
                if race.status == 409:  # created concurrently: read it and swap
                    continue
                raise
        data = dict(cm.data or {})
        raw = data.get(cut_key(chain))
        if raw and int(json.loads(raw)["seq"]) >= cut.seq:
            stored = json.loads(raw)
            return Cut(
                int(stored["seq"]),
                str(stored["prev"]),
                str(stored.get("exported_to", "")),
                str(stored.get("time", "")),
            )
        data[cut_key(chain)] = cut.to_json()
        cm.data = data
        try:
            # cm.metadata.resourceVersion is the one we read: the API server refuses a stale write.
            core.replace_namespaced_config_map(kube.ANCHORS_CONFIGMAP, namespace, cm)
            return cut
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            log.debug("anchors %s: conflict writing %s, re-reading", namespace, cut_key(chain))
    raise RuntimeError(
        f"could not write {cut_key(chain)} to {namespace}/"
        f"{kube.ANCHORS_CONFIGMAP} after {CAS_ATTEMPTS} conflicts"
    )
