#!/usr/bin/env python
"""The walkthrough's support agent as a pod: it runs in kubewrit's own image (the SDK is in
it) with its projected ServiceAccount token, and asks the webhook through its Service.

    KUBEWRIT_URL=https://kubewrit-webhook.kubewrit-system.svc \\
    KUBEWRIT_CA=/etc/kubewrit/ca.crt KUBEWRIT_PUBLIC_KEY=<base64url key> \\
    python cluster_agent.py

It asks for a $45 refund (PERMIT: it verifies the writ's signature with the cluster's
public key before "running" the tool), a $340 refund (DEFER: it long-polls until a human
annotates the ActionApproval, then runs with the writ it gets), and a $1,200 refund
(DENY). Each outcome is printed as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from kubewrit.webhook.client import ActionDenied, Client, Governor

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def report(amount: int, **fields: Any) -> None:
    print(json.dumps({"amount": amount, **fields}), flush=True)


def main() -> int:
    client = Client(
        os.environ["KUBEWRIT_URL"],
        verify=os.environ.get("KUBEWRIT_CA") or True,
        timeout=10,
    )
    governor = Governor(
        client=client,
        # In Kubernetes the namespace is part of the action a writ covers.
        namespace=os.environ.get("KUBEWRIT_NAMESPACE") or SA_NAMESPACE.read_text().strip(),
        public_key=os.environ.get("KUBEWRIT_PUBLIC_KEY") or None,
        approval_timeout=float(os.environ.get("KUBEWRIT_APPROVAL_TIMEOUT", "120")),
    )
    for n, amount in enumerate((45, 340, 1200)):
        args = {"order_id": f"A-100{n + 1}", "amount": amount}
        try:
            permit = governor.check("process_refund", args)
            claims = governor.authorize(permit, args)  # signature, arguments, expiry, single use
            report(
                amount,
                decision="PERMIT",
                rule=permit.decision.get("rule_id"),
                approval=permit.approval_id,
                writ_verified=True,
                agent=claims.agent,
                chain=claims.chain,
                seq=claims.seq,
            )
        except ActionDenied as denied:
            report(amount, decision="DENY", reason=denied.reason, message=str(denied))
    governor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
