"""Ed25519 batch verification for `kubewrit verify` (see `kubewrit.webhook.keys`)."""

from kubewrit_batchverify._batchverify import verify_all

__all__ = ["verify_all"]
