"""kubewrit's Kubernetes operator (kopf): AgentPolicy admission and status, ActionApproval
approver stamping, retention of ActionRecords under Lease-based leader election.

Run it with ``python -m kubewrit.operator --help``. The small API below is what other
parts (and tests) use without starting kopf.
"""

import sys

if __name__ == "operator":
    # `python -m ...` from the repository root puts the root first on sys.path, so this
    # folder can be found as the standard library's `operator`. Step aside for the real
    # one (using only what is loaded before `operator` itself: os and the bootstrap).
    import os
    from importlib import _bootstrap, _bootstrap_external  # type: ignore[attr-defined]

    _path = os.path.join(os.path.dirname(os.__file__), "operator.py")
    _spec = _bootstrap_external.spec_from_file_location("operator", _path)
    assert _spec is not None and _spec.loader is not None
    _real = _bootstrap.module_from_spec(_spec)
    sys.modules["operator"] = _real
    _spec.loader.exec_module(_real)
else:
    from kubewrit.operator.anchors import Cut, read_cut, write_cut
    from kubewrit.operator.config import Config, parse_duration
    from kubewrit.operator.leader import LeaderElector
    from kubewrit.operator.retention import Retention

    __all__ = [
        "Config",
        "Cut",
        "LeaderElector",
        "Retention",
        "parse_duration",
        "read_cut",
        "write_cut",
    ]
