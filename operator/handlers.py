"""Importing this module registers every kopf handler of the operator."""

from kubewrit.operator import approvals, lifecycle, policies

__all__ = ["approvals", "lifecycle", "policies"]
