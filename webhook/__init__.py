"""kubewrit's decision point: canonical actions, policies, provenance chains, writs."""
