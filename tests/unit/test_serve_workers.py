"""Several standalone server processes: what they may share and what they refuse."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
from kubewrit.webhook import policy, standalone
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.server import workers

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "examples" / "policies"


def state_of(directory: Path) -> PolicyState:
    state = PolicyState()
    state.replace(policy.load_paths(sorted(directory.glob("*.yaml"))), {}, 1)
    return state


def test_each_process_claims_its_own_chain(tmp_path: Path) -> None:
    first = standalone.ChainSlot(tmp_path, "standalone-abc")
    second = standalone.ChainSlot(tmp_path, "standalone-abc")
    assert (first.chain, second.chain) == ("standalone-abc", "standalone-abc-1")
    first.release()  # a worker that exits frees its chain for the next one
    third = standalone.ChainSlot(tmp_path, "standalone-abc")
    assert third.chain == "standalone-abc"
    second.release()
    third.release()


def test_config_travels_to_workers_unchanged(tmp_path: Path) -> None:
    config = standalone.Config(
        policies=POLICIES, data_dir=tmp_path, writ_ttl=30, shared=True, bootstrap_tokens=False
    )
    assert standalone.Config.from_json(config.to_json()) == config


def test_workers_share_a_port_each_with_its_own_socket() -> None:
    first = workers.reuseport_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = workers.reuseport_socket("127.0.0.1", port)
    assert second.getsockname()[1] == port
    first.close()
    second.close()


def test_a_port_held_by_another_program_is_refused_at_once() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            workers.reuseport_socket("127.0.0.1", other.getsockname()[1])


def test_workers_that_cannot_start_stop_the_supervisor() -> None:
    started = time.monotonic()
    with pytest.raises(workers.WorkersFailed, match="keep exiting"):
        workers.supervise(sys.exit, (3,), 2)
    assert time.monotonic() - started < 30
