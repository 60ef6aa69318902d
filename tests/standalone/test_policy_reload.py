"""Policy hot reload against a real `kubewrit serve`: torn saves, symlinks, a re-created directory.

Two files: one permits every refund, the other denies refunds over 1000. If the deny
file were read as "no policy" while an editor writes it, a 1200 refund would be permitted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, poll, start_server
from tests.unit.test_reload import LIMITS, REFUNDS


@pytest.fixture
def two_files(tmp_path: Path) -> Iterator[Server]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "refunds.yaml").write_text(REFUNDS)
    (source / "limits.yaml").write_text(LIMITS)
    server = start_server(tmp_path / "run", policies=source)
    yield server
    server.stop()


def outcome(server: Server, amount: int) -> tuple[str, str]:
    body = server.decide(tool="process_refund", args={"amount": amount}).json()
    return body["decision"], body["reason"]


@pytest.mark.parametrize(
    "torn",
    ["", LIMITS[: LIMITS.index("amount_gt")], LIMITS[: LIMITS.index("    deny")]],
    ids=["truncated-to-empty", "half-written", "rule-without-effect"],
)
def test_a_torn_save_never_drops_the_deny_rule(
    tmp_path: Path, two_files: Server, torn: str
) -> None:
    limits = two_files.policies / "limits.yaml"
    assert outcome(two_files, 1200) == ("DENY", "rule_deny")
    with limits.open("w") as editor:  # an in-place save: truncate, write part, stall
        editor.write(torn)
        editor.flush()
        deadline = time.monotonic() + 1.5  # several polls and settle windows
        while time.monotonic() < deadline:
            assert outcome(two_files, 1200) == ("DENY", "rule_deny")
            time.sleep(0.1)
        ready = poll(
            lambda: two_files.get("/readyz").json(),
            lambda body: body.get("sources_not_loaded") != [],
            timeout=5,
        )
        assert ready.get("sources_not_loaded") == [
            {
                "source": str(limits),
                "problem": ready["sources_not_loaded"][0]["problem"],
                "in_force": "its last valid content",
            }
        ]
        assert str(limits) in ready["last_error"] and ready["ready"] is True
        editor.write(LIMITS[len(torn) :])  # the save completes
    ready = poll(
        lambda: two_files.get("/readyz").json(),
        lambda body: body["sources_not_loaded"] == [],
        timeout=5,
    )
    assert ready["sources_not_loaded"] == [] and ready["last_error"] is None
    assert outcome(two_files, 1200) == ("DENY", "rule_deny")


def test_edits_to_a_symlinked_policy_files_target_are_live(
    tmp_path: Path, two_files: Server
) -> None:
    limits = two_files.policies / "limits.yaml"
    target = tmp_path / "elsewhere" / "limits.yaml"
    target.parent.mkdir()
    target.write_text(LIMITS)
    staged = two_files.policies / ".limits.yaml.tmp"
    staged.symlink_to(target)
    staged.replace(limits)
    time.sleep(0.5)
    target.write_text(LIMITS.replace("1000", "100"))  # edit the target, not the link
    assert poll(lambda: outcome(two_files, 500), lambda o: o[1] == "rule_deny", timeout=5) == (
        "DENY",
        "rule_deny",
    )


def test_a_deleted_and_recreated_policy_directory_keeps_reloading(
    tmp_path: Path, two_files: Server
) -> None:
    directory = two_files.policies
    assert outcome(two_files, 45) == ("PERMIT", "rule_allow")
    shutil.rmtree(directory)
    assert poll(lambda: outcome(two_files, 45), lambda o: o[0] == "DENY", timeout=5) == (
        "DENY",
        "default_deny",
    )
    assert two_files.get("/readyz").status_code == 503
    directory.mkdir()
    (directory / "refunds.yaml").write_text(REFUNDS)
    assert poll(lambda: outcome(two_files, 45), lambda o: o[0] == "PERMIT", timeout=5) == (
        "PERMIT",
        "rule_allow",
    )
    (directory / "limits.yaml").write_text(LIMITS)
    assert poll(lambda: outcome(two_files, 1200), lambda o: o[0] == "DENY", timeout=5) == (
        "DENY",
        "rule_deny",
    )
