"""`helm uninstall` (last: the other cluster tests share the release): no kubewrit admission
configuration is left to refuse writes, and what is kept on purpose stays."""

from __future__ import annotations

from tests.cluster.conftest import NAMESPACE, RELEASE, Release


def test_helm_uninstall_leaves_no_webhook_configuration(kubewrit: Release) -> None:
    c = kubewrit.cluster
    before = c.kubectl("get", "actionrecords", "-n", kubewrit.shop, "-o", "name").stdout.split()
    r = c.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "2m", timeout=180)
    assert "uninstalled" in r.stdout
    configs = c.kubectl(
        "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name"
    ).stdout
    assert "kubewrit" not in configs, configs
    policies = c.kubectl(
        "get", "validatingadmissionpolicies,validatingadmissionpolicybindings", "-o", "name"
    ).stdout
    assert "kubewrit" not in policies, policies
    # Kept on purpose: the CRDs and the records (the audit trail), the signing key.
    crds = c.kubectl("get", "crds", "-o", "name").stdout
    assert "actionrecords.kubewrit.io" in crds and "agentpolicies.kubewrit.io" in crds
    after = c.kubectl("get", "actionrecords", "-n", kubewrit.shop, "-o", "name").stdout.split()
    assert after == before and after
    assert (
        c.kubectl(
            "get", "secret", f"{RELEASE}-webhook-signing-key", "-n", NAMESPACE, check=False
        ).returncode
        == 0
    )
    # Without the operator nothing refuses an AgentPolicy write any more (no stale
    # fail-closed configuration pointing at a Service without endpoints).
    c.kubectl(
        "annotate",
        "agentpolicy",
        "support-agent",
        "-n",
        kubewrit.shop,
        "touched=yes",
        "--overwrite",
    )
