"""Framework adapters: thin wrappers that route every tool call through the shared Governor.

Each module imports its framework at import time; this package imports none of
them, so `import kubewrit.webhook` never needs a framework installed.
"""
