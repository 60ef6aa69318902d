"""The policy language: compile documents, evaluate actions."""

from kubewrit.webhook.policy.compiler import PolicyError, compile_document
from kubewrit.webhook.policy.evaluator import evaluate
from kubewrit.webhook.policy.loader import load_paths, parse_text
from kubewrit.webhook.policy.model import Effect, Mode, Policy

__all__ = [
    "Effect",
    "Mode",
    "Policy",
    "PolicyError",
    "compile_document",
    "evaluate",
    "load_paths",
    "parse_text",
]
