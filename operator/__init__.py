"""kubewrit's Kubernetes operator (kopf): AgentPolicy status, approvals, anchors, retention."""
