"""kubewrit's Kubernetes operator (kopf): AgentPolicy admission and status, ActionApproval
approver stamping, retention of ActionRecords under Lease-based leader election.

Run it with ``python -m kubewrit.operator --help``. The small API below is what other
parts (and tests) use without starting kopf.
"""

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
