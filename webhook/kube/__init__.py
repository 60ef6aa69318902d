"""The Kubernetes backend: TokenReview identity, AgentPolicy cache, ActionRecords, ActionApprovals."""
