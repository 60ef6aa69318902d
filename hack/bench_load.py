"""Shared by the HTTP benchmarks: a compiled load generator, CPU accounting, floors.

The load generator is `hey` (github.com/rakyll/hey), built from its Go module into
~/.cache/kubewrit/bin on first use (idempotent; instant when cached; its two
dependencies come through the Go module proxy too). hey prints a per-request CSV
whose times have 0.1 ms resolution; the build patches that one format string
(`%4.4f` -> `%.7f`) so sub-millisecond percentiles are exact, and adds the error
counts (which the CSV leaves out) as `error,<count>,<message>` lines.

CPU is read from /proc/<pid>/stat (utime + stime) of every process in the server's
tree, before and after a run; the client's CPU comes from its own rusage.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HEY_MODULE = "github.com/rakyll/hey"
HEY_VERSION = "v0.1.4"
CACHE = Path(os.environ.get("KUBEWRIT_CACHE", Path.home() / ".cache" / "kubewrit"))
TICKS = os.sysconf("SC_CLK_TCK")


def ensure_hey() -> Path:
    """The patched hey binary, built once from the Go module proxy."""
    binary = CACHE / "bin" / f"hey-{HEY_VERSION}-kubewrit1"
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    info = json.loads(
        subprocess.run(
            [go, "mod", "download", "-json", f"{HEY_MODULE}@{HEY_VERSION}"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        ).stdout
    )
    with tempfile.TemporaryDirectory(prefix="hey-build-") as scratch:
        source = Path(scratch) / "hey"
        shutil.copytree(info["Dir"], source)
        for path in source.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        printer = source / "requester" / "print.go"
        text = printer.read_text()
        if '"%4.4f"' not in text:
            raise RuntimeError(f"{printer}: the format string to patch is not there")
        csv_end = "{{ formatNumber (index $offsets $i) }}{{ end }}`"
        if csv_end not in text:
            raise RuntimeError(f"{printer}: the CSV template to extend is not there")
        errors = "{{ range $err, $num := .ErrorDist }}\nerror,{{ $num }},{{ $err }}{{ end }}`"
        text = text.replace(csv_end, csv_end[:-1] + errors)
        printer.write_text(text.replace('"%4.4f"', '"%.7f"'))
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.parent / f"{binary.name}.partial"
        subprocess.run(
            [go, "build", "-mod=mod", "-o", str(partial), "."],
            check=True,
            cwd=source,
            env={**os.environ, "GOFLAGS": "", "GO111MODULE": "on", "GOWORK": "off"},
        )
        partial.rename(binary)
    return binary


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn workers, multiprocessing children)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICKS


def pids_named(*names: str) -> list[int]:
    """Every running process whose command name is one of `names`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() in names:
                found.append(int(stat.parent.name))
        except OSError:
            continue
    return found


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Run:
    requests: int
    concurrency: int
    latencies_ms: list[float]
    statuses: dict[int, int]
    elapsed: float
    server_cpu: float
    client_cpu: float
    behind_cpu: float | None = None  # what the server waited on (see `hey`)
    behind_by_process: dict[str, float] | None = None  # the same, by command name

    def summary(self) -> dict[str, float]:
        ms = self.latencies_ms
        behind = {}
        if self.behind_cpu is not None:
            behind["control_plane_cpu_ms_per_request"] = round(1000 * self.behind_cpu / len(ms), 3)
        for name, cpu in sorted((self.behind_by_process or {}).items()):
            behind[f"{name}_cpu_ms_per_request"] = round(1000 * cpu / len(ms), 3)
        return {
            "p50_ms": round(percentile(ms, 0.50), 3),
            "p95_ms": round(percentile(ms, 0.95), 3),
            "p99_ms": round(percentile(ms, 0.99), 3),
            "throughput_per_s": round(len(ms) / self.elapsed, 1),
            "server_cpu_ms_per_request": round(1000 * self.server_cpu / len(ms), 3),
            "client_cpu_ms_per_request": round(1000 * self.client_cpu / len(ms), 3),
            **behind,
        }


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` and of its descendants on `cpus`; threads started later
    inherit it from the thread that starts them."""
    for process in process_tree(pid):
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:  # a thread that ended meanwhile
                continue


def hey(
    url: str,
    body: bytes,
    requests: int,
    concurrency: int,
    server_pid: int,
    headers: dict[str, str] | None = None,
    behind: list[int] | None = None,
    cpus: set[int] | None = None,
) -> Run:
    """POST `body` `requests` times from `concurrency` connections; per-request timings.

    `behind`: processes the server relies on (kube-apiserver, etcd), whose CPU is
    reported beside the server's: on shared cores it is part of every decision's cost.
    `cpus`: the only CPUs hey may run on (see `pin` for the server's).
    """
    binary = ensure_hey()
    requests = max(1, requests // concurrency) * concurrency  # hey sends n // c per connection
    with tempfile.NamedTemporaryFile(suffix=".json") as payload:
        payload.write(body)
        payload.flush()
        command = [
            str(binary),
            "-n",
            str(requests),
            "-c",
            str(concurrency),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            payload.name,
            "-o",
            "csv",
        ]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        pids = process_tree(server_pid)
        before, before_behind = cpu_seconds(pids), {pid: cpu_seconds([pid]) for pid in behind or []}
        started = time.perf_counter()
        client = subprocess.Popen(
            [*command, url],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        assert client.stdout is not None
        output = client.stdout.read()
        _, status, usage = os.wait4(client.pid, 0)  # reaped here, for its rusage
        client.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        server = cpu_seconds(pids) - before
        by_process: dict[str, float] = {}
        for pid, cpu in before_behind.items():
            name = command_name(pid)
            by_process[name] = by_process.get(name, 0.0) + cpu_seconds([pid]) - cpu
        backing = sum(by_process.values())
    if client.returncode:
        raise RuntimeError(f"hey failed ({client.returncode}): {output[-500:]}")
    latencies, statuses, last_offset = [], {}, 0.0
    errors = {}
    for line in output.splitlines()[1:]:
        if line.startswith("error,"):
            _, count, message = line.split(",", 2)
            errors[message] = int(count)
            continue
        parts = line.split(",")
        if len(parts) < 8:
            continue
        latencies.append(float(parts[0]) * 1000)
        code = int(parts[6])
        statuses[code] = statuses.get(code, 0) + 1
        last_offset = max(last_offset, float(parts[7]) + float(parts[0]))
    if len(latencies) != requests:
        raise RuntimeError(f"{requests - len(latencies)} of {requests} requests failed: {errors}")
    return Run(
        requests,
        concurrency,
        latencies,
        statuses,
        last_offset or elapsed,
        server,
        usage.ru_utime + usage.ru_stime,
        backing if behind else None,
        by_process if behind else None,
    )


def fsync_commit_floor(directory: Path, commits: int = 300) -> float:
    """Median ms of one durable SQLite commit (WAL, synchronous=FULL), as the store commits."""
    path = directory / "floor.db"
    connection = sqlite3.connect(str(path), isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, body TEXT)")
    samples = []
    body = "x" * 600
    for index in range(commits):
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t VALUES (?, ?)", (index, body))
        connection.execute("COMMIT")
        samples.append(time.perf_counter() - started)
    connection.close()
    return round(1000 * statistics.median(samples), 4)


def ed25519_sign_floor(signs: int = 3000) -> float:
    """Median µs of one Ed25519 signature over a 64-byte message (what a record signs),
    made as the server makes it (`keys.Signer`: libsodium)."""
    from kubewrit.webhook import keys

    key = keys.generate()
    message = b"0123456789abcdef" * 4
    batches = []
    for _ in range(signs // 100):
        started = time.perf_counter()
        for _ in range(100):
            key.sign(message)
        batches.append((time.perf_counter() - started) / 100)
    return round(1e6 * statistics.median(batches), 2)


def spread(summaries: list[dict[str, float]]) -> dict[str, object]:
    """Medians over repeated runs, and each metric's range as [min, max]."""
    keys = list(summaries[0])
    medians: dict[str, object] = {
        key: round(statistics.median(s[key] for s in summaries), 3) for key in keys
    }
    medians["ranges"] = {
        key: [round(min(s[key] for s in summaries), 3), round(max(s[key] for s in summaries), 3)]
        for key in keys
    }
    return medians
