#!/usr/bin/env python3
"""Fill a standalone data directory with valid sealed records, and time `kubewrit verify`.

    hack/bench_store.py fill DATA_DIR --records 1000000 [--batch 8]
    hack/bench_store.py verify DATA_DIR

`fill` seals records exactly as the recorder does (chain.Head.seal_next with the data
directory's own signing key, created if missing) on several chains named
`prefill-<n>`, one per CPU, and writes them through the SQLite store in large
transactions, then anchors each chain; the server later writes its own chain beside
them. `--batch N` seals them as the recorder seals batches of N (records that queued
up during one commit): the last of each signed, the others `batched` (chain.py); 1,
the default, signs every record, as a server answering one client at a time does.
`verify` runs `kubewrit verify` on the directory and reports seconds per
million records and the CPU it used; `--without-batches` runs it as if the batch
signature verifier (native/batchverify) were not built, for a side-by-side figure.
Both print JSON. Used by `bench_decide.py --prefill`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kubewrit.webhook import chain, keys
from kubewrit.webhook.chain import Draft, Head
from kubewrit.webhook.store.sqlite import SQLiteStore

BATCH = 20_000


def small_refund(index: int, namespace: str | None = None) -> Draft:
    """The walkthrough's small refund PERMIT, as a server records it (`index` varies its
    action hash)."""
    return Draft(
        kind="decision",
        decision="PERMIT",
        reason="rule_allow",
        agent="support-agent",
        tool="process_refund",
        action_hash=f"{index:064x}",
        policy_hash="sha256:" + "ab" * 32,
        rule="support-agent/small-refunds",
        risk="low",
        message="Small refunds auto-approved",
        namespace=namespace,
    )


def _fill_chain(args: tuple[str, str, int, int]) -> int:
    data_dir, chain_id, count, batch = args
    directory = Path(data_dir)
    signer = keys.load_or_create(directory / "signing-key.pem")
    store = SQLiteStore(directory / "kubewrit.db")
    head = Head(chain_id)
    pending = [head.seal_next(chain.genesis_draft(signer.verifier.b64), signer)]
    for index in range(count - 1):
        draft = small_refund(index)
        last = index % batch == batch - 1 or index == count - 2
        pending.append(head.seal_next(draft, signer, signed=last))
        if len(pending) >= BATCH:
            store.write(pending)
            pending = []
    if pending:
        store.write(pending)
    store.publish_anchor(chain.sign_anchor(head, signer))
    store.close()
    return count


def fill(data_dir: Path, records: int, chains: int | None = None, batch: int = 1) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    keys.load_or_create(data_dir / "signing-key.pem")
    SQLiteStore(data_dir / "kubewrit.db").close()
    chains = chains or os.cpu_count() or 1
    shares = [records // chains + (1 if n < records % chains else 0) for n in range(chains)]
    jobs = [
        (str(data_dir), f"prefill-{n}", share, batch) for n, share in enumerate(shares) if share
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        pool.map(_fill_chain, jobs)


def bytes_per_record(data_dir: Path) -> dict[str, object]:
    """The store's size on disk per record, after folding the WAL into the database."""
    connection = sqlite3.connect(str(data_dir / "kubewrit.db"))
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = connection.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    finally:
        connection.close()
    size = sum(p.stat().st_size for p in data_dir.glob("kubewrit.db*"))
    return {"store_records": count, "store_bytes_per_record": round(size / max(1, count), 1)}


# `kubewrit verify`, as if the batch verifier were not built: for a side-by-side figure.
WITHOUT_BATCHES = (
    "import sys; sys.modules['kubewrit_batchverify'] = None; "
    "from kubewrit.cli import main; sys.argv[0] = 'kubewrit'; main()"
)


def verify_seconds(data_dir: Path, batches: bool = True) -> dict[str, object]:
    command = [shutil.which("kubewrit") or "kubewrit"]
    if not batches:
        command = [sys.executable, "-c", WITHOUT_BATCHES]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [*command, "verify", "--data-dir", str(data_dir), "-o", "json"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    report = json.loads(result.stdout)
    total = report["records"]
    progress = [line for line in result.stderr.splitlines() if line.startswith("read ")]
    return {
        "verify_ok": report["ok"],
        "verify_records": total,
        "verify_seconds": round(elapsed, 2),
        "verify_seconds_per_million": round(elapsed * 1_000_000 / max(1, total), 1),
        "verify_cpu_seconds": round(cpu, 1),  # this process's and the checking processes'
        "signatures": "batches" if batches and keys.BATCH_VERIFIER else "one at a time",
        "progress": progress[0] if progress else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["fill", "verify"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1, help="records per signature")
    parser.add_argument(
        "--without-batches",
        action="store_true",
        help="verify as if the batch signature verifier (native/batchverify) were not built",
    )
    args = parser.parse_args()
    if args.action == "fill":
        started = time.perf_counter()
        fill(args.data_dir, args.records, batch=args.batch)
        elapsed = time.perf_counter() - started
        filled = {"records": args.records, "batch": args.batch, "seconds": round(elapsed, 1)}
        print(json.dumps({**filled, **bytes_per_record(args.data_dir)}))
    else:
        print(json.dumps(verify_seconds(args.data_dir, batches=not args.without_batches)))


if __name__ == "__main__":
    sys.exit(main())
