"""Policy hot reload: torn writes, last valid content, symlinks, a re-created directory."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from kubewrit.webhook import canonical, policy, reload
from kubewrit.webhook.decision import Decision, Reason
from kubewrit.webhook.policy_state import PolicyState

REFUNDS = """agents: [support-agent]
rules:
  - id: refunds
    match: {tool: process_refund}
    allow: true
"""
LIMITS = """agents: [support-agent]
rules:
  - id: over-1000
    match: {tool: process_refund, amount_gt: 1000}
    deny: true
"""


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload, "SETTLE_SECONDS", 0.02, raising=False)
    monkeypatch.setattr(reload, "SETTLE_UNTERMINATED_SECONDS", 0.05, raising=False)
    monkeypatch.setattr(reload, "SETTLE_TIMEOUT_SECONDS", 0.5, raising=False)


def decide(state: PolicyState, amount: int) -> tuple[Decision, Reason]:
    action = canonical.build_action("support-agent", "process_refund", {"amount": amount})
    verdict = policy.evaluate(state.current(), action)
    return verdict.decision, verdict.reason


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "refunds.yaml").write_text(REFUNDS)
    (folder / "limits.yaml").write_text(LIMITS)
    return folder


@pytest.fixture
def state(directory: Path) -> PolicyState:
    loaded = PolicyState()
    assert reload.load_into(loaded, directory)
    assert decide(loaded, 1200) == (Decision.DENY, Reason.RULE_DENY)
    return loaded


@pytest.mark.parametrize(
    "torn",
    [
        "",  # truncated to empty: the first thing an in-place save does
        "\n",
        "# a comment left by a half-finished edit\n",
        LIMITS[: LIMITS.index("amount_gt")],  # half written, ends mid-line
        LIMITS[: LIMITS.index("    deny")],  # a rule with no effect yet
        "\x00\x00\x00\x00",  # a preallocated, not yet written block
        b"\xff\xfe\x00".decode("latin-1"),
    ],
)
def test_a_torn_file_keeps_its_last_valid_content(
    state: PolicyState, directory: Path, torn: str
) -> None:
    (directory / "limits.yaml").write_text(torn, encoding="latin-1")
    assert not reload.load_into(state, directory)
    assert decide(state, 1200) == (Decision.DENY, Reason.RULE_DENY)
    assert decide(state, 45) == (Decision.PERMIT, Reason.RULE_ALLOW)
    detail = state.detail()
    (entry,) = detail["sources_not_loaded"]  # type: ignore[misc]
    assert entry["source"] == str(directory / "limits.yaml")
    assert entry["in_force"] == "its last valid content"
    assert str(directory / "limits.yaml") in str(detail["last_error"])

    (directory / "limits.yaml").write_text(LIMITS.replace("1000", "2000"))
    assert reload.load_into(state, directory)
    assert decide(state, 1200) == (Decision.PERMIT, Reason.RULE_ALLOW)
    assert state.detail()["sources_not_loaded"] == []
    assert state.detail()["last_error"] is None


def test_a_file_that_never_was_valid_puts_nothing_in_force(
    state: PolicyState, directory: Path
) -> None:
    (directory / "new.yaml").write_text("")
    reload.load_into(state, directory)
    (entry,) = state.detail()["sources_not_loaded"]  # type: ignore[misc]
    assert entry["in_force"] == "nothing" and "empty" in entry["problem"]
    assert [p.name for p in state.current()] == ["limits", "refunds"]


def test_a_deleted_file_is_gone(state: PolicyState, directory: Path) -> None:
    (directory / "limits.yaml").unlink()
    assert reload.load_into(state, directory)
    assert decide(state, 1200) == (Decision.PERMIT, Reason.RULE_ALLOW)


def test_a_dangling_symlink_keeps_the_last_valid_content(
    state: PolicyState, directory: Path, tmp_path: Path
) -> None:
    target = tmp_path / "limits-target.yaml"
    (directory / "limits.yaml").rename(target)
    (directory / "limits.yaml").symlink_to(target)
    assert reload.load_into(state, directory)
    target.unlink()
    assert not reload.load_into(state, directory)
    assert decide(state, 1200) == (Decision.DENY, Reason.RULE_DENY)


def test_a_name_clash_between_files_changes_nothing(state: PolicyState, directory: Path) -> None:
    (directory / "more.yaml").write_text("name: limits\n" + REFUNDS)
    generation = state.generation
    assert not reload.load_into(state, directory)
    assert state.generation == generation
    assert "already used" in str(state.error)
    assert decide(state, 1200) == (Decision.DENY, Reason.RULE_DENY)


def test_settle_waits_for_a_writer_to_finish(directory: Path) -> None:
    target = directory / "limits.yaml"
    chunks = iter([LIMITS[:20], LIMITS[:40], LIMITS[:60], LIMITS])
    writes: list[str] = []

    def writing_while_we_wait(seconds: float) -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            target.write_text(chunk)
            writes.append(chunk)

    target.write_text("")
    snapshot = reload.settle(directory, 0.0, 0.0, 5.0, writing_while_we_wait)
    assert snapshot is not None
    assert snapshot.contents["limits.yaml"] == LIMITS.encode()
    assert len(writes) == 4


def test_settle_gives_up_on_a_file_that_never_stops_changing(directory: Path) -> None:
    target = directory / "limits.yaml"
    counter = iter(range(10**6))
    assert (
        reload.settle(directory, 0.0, 0.0, 0.2, lambda _: target.write_text(f"# {next(counter)}\n"))
        is None
    )


def test_a_file_still_changing_keeps_the_policy_in_force(
    state: PolicyState, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "settle", lambda *_args, **_kw: None)
    (directory / "limits.yaml").write_text("")
    assert not reload.load_into(state, directory)
    assert "still being written" in str(state.error)
    assert decide(state, 1200) == (Decision.DENY, Reason.RULE_DENY)


def run_watch(
    state: PolicyState, directory: Path, steps: list[tuple[Callable[[], None], Callable[[], bool]]]
) -> None:
    """Run the real watcher; after each change, wait (2 s at most) for its condition."""

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(reload.watch(state, directory, stop=stop, interval=0.02))
        await asyncio.sleep(0)  # the watcher's start (it creates a missing directory) runs first
        try:
            for change, done in steps:
                await asyncio.to_thread(change)
                for _ in range(200):
                    if done():
                        break
                    await asyncio.sleep(0.01)
                assert done(), f"not reloaded after {change}"
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 2)

    asyncio.run(scenario())


def test_edits_to_a_symlinked_files_target_are_picked_up(
    state: PolicyState, directory: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "limits.yaml"
    shutil.move(directory / "limits.yaml", target)
    (directory / "limits.yaml").symlink_to(target)
    reload.load_into(state, directory)
    run_watch(
        state,
        directory,
        [
            (
                lambda: target.write_text(LIMITS.replace("1000", "100")),
                lambda: decide(state, 500) == (Decision.DENY, Reason.RULE_DENY),
            ),
        ],
    )


def test_a_deleted_and_recreated_directory_keeps_reloading(
    state: PolicyState, directory: Path
) -> None:
    def recreate() -> None:
        directory.mkdir()
        (directory / "refunds.yaml").write_text(REFUNDS)

    run_watch(
        state,
        directory,
        [
            (
                lambda: shutil.rmtree(directory),
                lambda: decide(state, 45) == (Decision.DENY, Reason.DEFAULT_DENY),
            ),
            (recreate, lambda: decide(state, 1200) == (Decision.PERMIT, Reason.RULE_ALLOW)),
            (
                lambda: (directory / "limits.yaml").write_text(LIMITS),
                lambda: decide(state, 1200) == (Decision.DENY, Reason.RULE_DENY),
            ),
        ],
    )
