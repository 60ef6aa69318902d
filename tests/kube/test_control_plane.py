"""The development control plane (hack/control-plane) behaves like a real cluster:
versions, CRD schemas and CEL, admission webhooks over TLS, RBAC, TokenReview,
garbage collection, namespace deletion, helm."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.kube


def _wait_until(pred, timeout: float = 30.0, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def test_versions_match_and_ready(control_plane):
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    client, server = out["clientVersion"], out["serverVersion"]
    pinned = control_plane.versions["KUBERNETES_VERSION"]
    assert server["gitVersion"] == pinned
    assert client["gitVersion"] == pinned
    assert client["major"] == server["major"] == "1"
    assert client["minor"] == server["minor"] == pinned.split(".")[1]
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    # controller-manager's serviceaccount controller ran
    control_plane.kubectl("get", "serviceaccount", "default", "-n", "default")


def test_python_client_is_wired(control_plane):
    from kubernetes import client

    v1 = client.CoreV1Api(control_plane.api_client)
    names = {ns.metadata.name for ns in v1.list_namespace().items}
    assert {"default", "kube-system"} <= names
    ver = client.VersionApi(control_plane.api_client).get_code()
    assert ver.git_version == control_plane.versions["KUBERNETES_VERSION"]


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.cptest.kubewrit.dev
spec:
  group: cptest.kubewrit.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              minSize: {type: integer, minimum: 1}
            x-kubernetes-validations:
            - rule: "!has(self.minSize) || self.minSize <= self.size"
              message: "minSize must not exceed size"
"""


def _widget(name: str, **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "cptest.kubewrit.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def test_crd_schema_and_cel_validation(control_plane, kube_namespace):
    cp, ns = control_plane, kube_namespace
    cp.kubectl("apply", "-f", "-", input=CRD)
    cp.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.cptest.kubewrit.dev", "--timeout=30s"
    )

    # A valid object is served back (retry: discovery of a new CRD may lag a moment).
    _wait_until(
        lambda: (
            cp.kubectl(
                "apply", "-n", ns, "-f", "-", input=_widget("ok", size=3, minSize=2), check=False
            ).returncode
            == 0
        ),
        what="valid Widget accepted",
    )
    got = json.loads(cp.kubectl("get", "widget", "ok", "-n", ns, "-o", "json").stdout)
    assert got["spec"] == {"size": 3, "minSize": 2}

    # Structural schema: maximum
    r = cp.kubectl("apply", "-n", ns, "-f", "-", input=_widget("big", size=20), check=False)
    assert r.returncode != 0
    assert "spec.size" in r.stderr and "less than or equal to 10" in r.stderr, r.stderr

    # Required field
    r = cp.kubectl("apply", "-n", ns, "-f", "-", input=_widget("nosize"), check=False)
    assert r.returncode != 0 and "spec.size: Required value" in r.stderr, r.stderr

    # CEL rule (x-kubernetes-validations)
    r = cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=_widget("cel", size=2, minSize=5), check=False
    )
    assert r.returncode != 0
    assert "minSize must not exceed size" in r.stderr, r.stderr

    assert cp.kubectl("get", "widgets", "-n", ns, "-o", "name").stdout.split() == [
        "widget.cptest.kubewrit.dev/ok"
    ]


def test_validating_webhook_called_over_tls(control_plane, kube_namespace, webhook_server):
    cp, ns = control_plane, kube_namespace

    def handler(req: dict) -> dict:
        obj = req.get("object") or {}
        if (obj.get("data") or {}).get("verdict") == "deny":
            return {
                "allowed": False,
                "status": {
                    "code": 403,
                    "message": f"kubewrit-test-webhook says no to {obj['metadata']['name']}",
                },
            }
        return {"allowed": True}

    srv = webhook_server(handler)
    cp.kubectl("label", "namespace", ns, f"kubewrit-webhook-test={ns}")
    name = f"cptest-{uuid.uuid4().hex[:8]}"
    cfg = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny.cptest.kubewrit.dev",
                "clientConfig": {"url": srv.url("/validate"), "caBundle": srv.ca_bundle},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubewrit-webhook-test": ns}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(cfg))
    try:

        def denied() -> str | None:
            cm = json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"no-{uuid.uuid4().hex[:6]}", "namespace": ns},
                    "data": {"verdict": "deny"},
                }
            )
            r = cp.kubectl("create", "-f", "-", input=cm, check=False)
            return r.stderr if r.returncode != 0 else None

        # The API server picks up new webhook configurations within a moment.
        err = _wait_until(denied, timeout=30, what="webhook denial")
        assert "kubewrit-test-webhook says no to" in err, err
        assert 'admission webhook "deny.cptest.kubewrit.dev" denied the request' in err, err

        cp.kubectl("create", "configmap", "allowed", "-n", ns, "--from-literal=verdict=allow")
        assert any(
            c["operation"] == "CREATE" and c["name"] == "allowed" and c["namespace"] == ns
            for c in srv.calls
        ), srv.calls
        assert srv.calls[-1]["userInfo"]["username"] == "kubewrit-admin"
        assert "system:masters" in srv.calls[-1]["userInfo"]["groups"]
        assert not srv.errors, srv.errors
    finally:
        cp.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


def test_rbac_is_enforced_for_users_and_groups(control_plane, kube_namespace):
    cp, ns = control_plane, kube_namespace
    cp.kubectl("create", "configmap", "c1", "-n", ns, "--from-literal=a=b")

    assert cp.kubectl("get", "configmaps", "-n", ns, user="admin").returncode == 0
    r = cp.kubectl("get", "configmaps", "-n", ns, user="bob", check=False)
    assert r.returncode != 0
    assert 'User "bob" cannot list resource "configmaps"' in r.stderr, r.stderr
    assert (
        cp.kubectl(
            "auth", "can-i", "list", "configmaps", "-n", ns, user="alice", check=False
        ).stdout.strip()
        == "no"
    )

    # Grant the approvers *group*: alice gains access, bob still doesn't.
    cp.kubectl("create", "role", "cm-reader", "-n", ns, "--verb=get,list", "--resource=configmaps")
    cp.kubectl(
        "create",
        "rolebinding",
        "approvers-read",
        "-n",
        ns,
        "--role=cm-reader",
        "--group=kubewrit-approvers",
    )
    _wait_until(
        lambda: (
            cp.kubectl("get", "configmap", "c1", "-n", ns, user="alice", check=False).returncode
            == 0
        ),
        what="alice allowed",
    )
    assert cp.kubectl("get", "configmap", "c1", "-n", ns, user="bob", check=False).returncode != 0
    who = cp.kubectl("auth", "whoami", "-o", "json", user="alice").stdout
    info = json.loads(who)["status"]["userInfo"]
    assert info["username"] == "alice" and "kubewrit-approvers" in info["groups"]
    # admin may delete what bob may not
    assert (
        cp.kubectl("delete", "configmap", "c1", "-n", ns, user="bob", check=False).returncode != 0
    )
    cp.kubectl("delete", "configmap", "c1", "-n", ns)


def test_serviceaccount_token_and_tokenreview(control_plane, kube_namespace):
    from kubernetes import client

    cp, ns = control_plane, kube_namespace
    cp.kubectl("create", "serviceaccount", "agent", "-n", ns)
    token = cp.kubectl("create", "token", "agent", "-n", ns, "--duration=10m").stdout.strip()
    assert token.count(".") == 2

    auth = client.AuthenticationV1Api(cp.api_client)
    review = auth.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{ns}:agent"
    assert f"system:serviceaccounts:{ns}" in review.status.user.groups

    bad = auth.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token[:-4] + "AAAA"))
    )
    assert not bad.status.authenticated

    # The token also works as a bearer credential against the API server.
    cfg = client.Configuration()
    cfg.host = cp.server
    cfg.ssl_ca_cert = str(cp.ca_file)
    cfg.api_key = {"authorization": "Bearer " + token}
    with client.ApiClient(cfg) as sa_client:
        with pytest.raises(client.ApiException) as ei:
            client.CoreV1Api(sa_client).list_namespaced_secret(ns)
        assert ei.value.status == 403
        assert f"system:serviceaccount:{ns}:agent" in ei.value.body

    # bob may not mint tokens
    r = cp.kubectl("create", "token", "agent", "-n", ns, user="bob", check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower(), r.stderr


def test_garbage_collection_of_owned_objects(control_plane, kube_namespace):
    cp, ns = control_plane, kube_namespace
    cp.kubectl("create", "configmap", "owner", "-n", ns)
    uid = cp.kubectl("get", "configmap", "owner", "-n", ns, "-o", "jsonpath={.metadata.uid}").stdout
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": ns,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    cp.kubectl("create", "-f", "-", input=json.dumps(dependent))
    cp.kubectl("delete", "configmap", "owner", "-n", ns)
    _wait_until(
        lambda: cp.kubectl("get", "configmap", "dependent", "-n", ns, check=False).returncode != 0,
        timeout=45,
        what="garbage collector to delete the dependent",
    )
    r = cp.kubectl("get", "configmap", "dependent", "-n", ns, check=False)
    assert "NotFound" in r.stderr, r.stderr


def test_namespace_deletion_completes(control_plane):
    cp = control_plane
    ns = f"kt-del-{uuid.uuid4().hex[:8]}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("create", "configmap", "x", "-n", ns)
    cp.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=60s", timeout=90)
    r = cp.kubectl("get", "namespace", ns, check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr


def test_validating_admission_policy(control_plane, kube_namespace):
    cp, ns = control_plane, kube_namespace
    name = f"cptest-{uuid.uuid4().hex[:8]}"
    cp.kubectl("label", "namespace", ns, f"kubewrit-vap-test={ns}")
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.data) || !('secret' in object.data)",
                    "message": "no secrets in configmaps",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubewrit-vap-test": ns}}},
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(policy))
    cp.kubectl("apply", "-f", "-", input=json.dumps(binding))
    try:

        def denied() -> str | None:
            r = cp.kubectl(
                "create",
                "configmap",
                f"s-{uuid.uuid4().hex[:6]}",
                "-n",
                ns,
                "--from-literal=secret=x",
                check=False,
            )
            return r.stderr if r.returncode != 0 else None

        err = _wait_until(denied, timeout=30, what="policy denial")
        assert "no secrets in configmaps" in err, err
    finally:
        cp.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        cp.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def test_helm_installs_a_chart(control_plane, kube_namespace, tmp_path: Path):
    cp, ns = control_plane, kube_namespace
    short = cp.helm("version", "--short").stdout.strip()
    assert short.startswith(cp.versions["HELM_VERSION"]), short
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    cp.helm(
        "install",
        "demo",
        str(chart),
        "-n",
        ns,
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    )
    got = cp.kubectl(
        "get", "configmap", "demo-cm", "-n", ns, "-o", "jsonpath={.data.greeting}"
    ).stdout
    assert got == "hi"
    assert "demo" in cp.helm("list", "-n", ns, "-q").stdout.split()
    cp.helm("uninstall", "demo", "-n", ns, "--wait")
    assert cp.kubectl("get", "configmap", "demo-cm", "-n", ns, check=False).returncode != 0
