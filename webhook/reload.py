"""Hot reload of a policy directory, safe against a file caught while an editor writes it.

A change is read only once the directory has settled: every policy file's identity,
size, times and bytes unchanged over a short window (a longer one for a file that
does not end with a line break, as a file cut mid-line would not). A file replaces
what it held only if it is complete: it parses, compiles and holds a policy. A file
that was a valid policy and becomes empty, truncated, unreadable or invalid keeps its
last valid content in force, and /readyz names it. Anything unexpected keeps the
policy in force: reload fails closed.

The directory is polled, not watched: `stat` follows a symlinked policy file to its
target, so edits there are seen, and polling survives the directory being deleted and
created again, which silently ends an inotify watch on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubewrit.webhook import policy
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy import loader
from kubewrit.webhook.policy.model import Policy
from kubewrit.webhook.policy_state import PolicyState, SourceProblem

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
SETTLE_SECONDS = 0.15
SETTLE_UNTERMINATED_SECONDS = 1.0  # a file not ending with a line break may be cut mid-line
SETTLE_TIMEOUT_SECONDS = 5.0

# name -> (device, inode, size, mtime_ns, ctime_ns) of the file a name leads to, following
# symlinks; or the error that stopped us from looking at it.
Scan = dict[str, tuple[int, int, int, int, int] | str]


@dataclass(frozen=True)
class Snapshot:
    """A settled view of the directory: what each policy file held, and its scan."""

    exists: bool
    scan: Scan
    contents: Mapping[str, bytes | str]  # bytes read, or why they could not be

    @property
    def version(self) -> tuple[bool, tuple[tuple[str, object], ...]]:
        return version_of(self.scan if self.exists else None)


def scan(directory: Path) -> Scan | None:
    """Stat every policy file in `directory` (None if the directory is not there)."""
    try:
        names = sorted(name for name in os.listdir(directory) if loader.is_policy_name(name))
    except (FileNotFoundError, NotADirectoryError):
        return None
    found: Scan = {}
    for name in names:
        try:
            st = os.stat(directory / name)  # follows a symlink to its target
        except OSError as exc:
            found[name] = f"cannot read: {exc.strerror or exc}"
            continue
        if not stat.S_ISDIR(st.st_mode):
            found[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


def version_of(found: Scan | None) -> tuple[bool, tuple[tuple[str, object], ...]]:
    """What `PolicyState.source_version` holds: a change to it means reload."""
    return found is not None, tuple(sorted((found or {}).items()))


def _read(directory: Path, names: Scan) -> dict[str, bytes | str]:
    contents: dict[str, bytes | str] = {}
    for name, entry in names.items():
        if isinstance(entry, str):
            contents[name] = entry
            continue
        try:
            contents[name] = (directory / name).read_bytes()
        except OSError as exc:
            contents[name] = f"cannot read: {exc.strerror or exc}"
    return contents


def _observe(directory: Path) -> Snapshot:
    found = scan(directory)
    if found is None:
        return Snapshot(False, {}, {})
    return Snapshot(True, found, _read(directory, found))


def _unterminated(snapshot: Snapshot) -> bool:
    return any(
        isinstance(c, bytes) and c and not c.endswith(b"\n") for c in snapshot.contents.values()
    )


def settle(
    directory: Path,
    window: float = SETTLE_SECONDS,
    unterminated_window: float = SETTLE_UNTERMINATED_SECONDS,
    timeout: float = SETTLE_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> Snapshot | None:
    """The directory once two looks `window` apart agree; None if it is still changing."""
    deadline = time.monotonic() + timeout
    before = _observe(directory)
    while True:
        sleep(unterminated_window if _unterminated(before) else window)
        after = _observe(directory)
        if after == before:
            return after
        if time.monotonic() > deadline:
            return None
        before = after


def _compile(text: bytes | str, source: str) -> tuple[list[Policy], str | None]:
    """Compile one file's bytes: its policies, or why they cannot be loaded."""
    if isinstance(text, str):
        return [], f"{source}: {text}"
    try:
        policies = loader.parse_text(text.decode("utf-8"), source)
    except UnicodeDecodeError as exc:
        return [], f"{source}: not UTF-8 text: {exc}"
    except policy.PolicyError as exc:
        return [], str(exc)
    if not policies:
        return [], f"{source}: empty: holds no policy (possibly caught mid-write)"
    return policies, None


def merge(
    snapshot: Snapshot, directory: Path, previous: tuple[Policy, ...] | list[Policy]
) -> tuple[list[Policy], dict[str, SourceProblem]]:
    """The policies to put in force: each file's new content if complete, else its last valid."""
    last_valid: dict[str, list[Policy]] = {}
    for item in previous:
        last_valid.setdefault(item.source, []).append(item)
    policies: list[Policy] = []
    problems: dict[str, SourceProblem] = {}
    for name, content in sorted(snapshot.contents.items()):
        source = str(directory / name)
        compiled, problem = _compile(content, source)
        if problem is None:
            policies.extend(compiled)
            continue
        kept = last_valid.get(source, [])
        policies.extend(kept)
        problems[source] = SourceProblem(problem, kept_last_valid=bool(kept))
    loader.check_unique(policies)
    return policies, problems


def load_into(state: PolicyState, directory: Path, metrics: Metrics | None = None) -> bool:
    """Settle, then put the directory's policies in force; False if anything was refused."""
    snapshot = settle(
        directory, SETTLE_SECONDS, SETTLE_UNTERMINATED_SECONDS, SETTLE_TIMEOUT_SECONDS
    )
    if snapshot is None:
        return _refuse(
            state,
            metrics,
            f"{directory}: still being written after {SETTLE_TIMEOUT_SECONDS:g} s; "
            "keeping the policy in force",
        )
    try:
        policies, problems = merge(snapshot, directory, tuple(state.policies))
    except policy.PolicyError as exc:
        # A conflict between files: no file is at fault alone, so nothing changes.
        state.source_version = snapshot.version
        return _refuse(state, metrics, f"{exc}; keeping the previous policy")
    state.replace(policies, problems, snapshot.version)
    if metrics:
        metrics.policies_loaded.set(len(policies))
        if problems:
            metrics.reload_failures.inc()
    for problem in problems.values():
        log.error(
            "policy change refused: %s; in force: %s",
            problem.problem,
            "its last valid content" if problem.kept_last_valid else "nothing from it",
        )
    if not snapshot.exists:
        log.warning("policy directory %s does not exist: every action is denied", directory)
    elif not policies:
        log.warning("no policies in %s: every action is denied", directory)
    else:
        log.info("policies loaded: %s", ", ".join(f"{p.name} ({p.hash[7:19]})" for p in policies))
    return not problems


def _refuse(state: PolicyState, metrics: Metrics | None, error: str) -> bool:
    log.error("policy change refused: %s", error)
    state.refuse(error)
    if metrics:
        metrics.reload_failures.inc()
    return False


def _changed(state: PolicyState, directory: Path) -> bool:
    return version_of(scan(directory)) != state.source_version


async def watch(
    state: PolicyState,
    directory: Path,
    metrics: Metrics | None = None,
    stop: asyncio.Event | None = None,
    interval: float = POLL_SECONDS,
) -> None:
    """Reload whenever a policy file under `directory` (or a symlink's target) changes."""
    stop = stop or asyncio.Event()
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        try:
            if await asyncio.to_thread(_changed, state, directory):
                await asyncio.to_thread(load_into, state, directory, metrics)
        except Exception as exc:  # never let the watcher die: keep the policy in force
            log.exception("policy reload failed")
            _refuse(
                state, metrics, f"{directory}: reload failed: {exc}; keeping the policy in force"
            )
