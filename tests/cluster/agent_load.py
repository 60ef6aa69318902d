#!/usr/bin/env python
"""Agent load from inside a pod, through the webhook's Service, with the SDK's Client.

    python agent_load.py load --clients 4 --seconds 20
    python agent_load.py bench --concurrency 16 --count 400

`load` runs `clients` threads deciding $45 refunds (PERMIT by the walkthrough policy)
for `seconds`; the SDK retries transport failures with the same request id. It prints
one JSON object: every answer (request id, decision, reason, record ref, time) and every
failure (what the client saw), so a test can check each PERMIT against the ActionRecords.

`bench` times `count` decisions at `concurrency` and prints p50/p95/p99 and decisions/s.
Runs in kubewrit's image (stdlib + the kubewrit SDK); configured by KUBEWRIT_URL,
KUBEWRIT_CA and the projected ServiceAccount token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubewrit.webhook.client import Client, KubewritError


def client() -> Client:
    return Client(os.environ["KUBEWRIT_URL"], verify=os.environ.get("KUBEWRIT_CA") or True)


def load(clients: int, seconds: float, amount: float) -> dict[str, Any]:
    answers: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = time.monotonic()
    start_wall = time.time()  # pods share the machine's clock: tests line faults up with it
    stop = start + seconds

    def worker(n: int) -> None:
        with client() as c:
            i = 0
            while time.monotonic() < stop:
                rid = f"load-{n}-{i}-{uuid.uuid4().hex[:8]}"
                t = time.monotonic() - start
                try:
                    a = c.decide(
                        "process_refund",
                        {"order_id": f"L-{n}-{i}", "amount": amount},
                        request_id=rid,
                    )
                    entry = {
                        "rid": rid,
                        "t": round(t, 3),
                        "decision": a.get("decision"),
                        "reason": a.get("reason"),
                        "record": a.get("record"),
                        "writ": bool(a.get("writ")),
                        "replayed": a.get("replayed", False),
                        "done": round(time.monotonic() - start, 3),
                    }
                    with lock:
                        answers.append(entry)
                except KubewritError as e:
                    entry = {
                        "rid": rid,
                        "t": round(t, 3),
                        "code": e.code,
                        "status": e.status,
                        "decision": (e.decision or {}).get("decision"),
                        "record": e.record,
                        "message": e.message[:200],
                        "done": round(time.monotonic() - start, 3),
                    }
                    with lock:
                        failures.append(entry)
                    time.sleep(0.1)
                i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "elapsed": round(time.monotonic() - start, 2),
        "start_wall": start_wall,
        "answers": answers,
        "failures": failures,
    }


def bench(concurrency: int, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        nonlocal errors
        if not hasattr(local, "c"):
            local.c = client()
        t0 = time.perf_counter()
        try:
            local.c.decide("process_refund", {"order_id": f"B-{i}", "amount": 45})
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
        except KubewritError:
            with lock:
                errors += 1

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(concurrency * 2, 20))))  # warm connections
        latencies.clear()
        t0 = time.perf_counter()
        list(pool.map(one, range(count)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [0.0] * 99
    return {
        "concurrency": concurrency,
        "decisions": len(latencies),
        "errors": errors,
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "decisions_per_s": round(len(latencies) / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--clients", type=int, default=4)
    lp.add_argument("--seconds", type=float, default=20)
    lp.add_argument("--amount", type=float, default=45)
    bp = sub.add_parser("bench")
    bp.add_argument("--concurrency", type=int, action="append")
    bp.add_argument("--count", type=int, default=200)
    a = ap.parse_args()
    if a.cmd == "load":
        print(json.dumps(load(a.clients, a.seconds, a.amount)), flush=True)
    else:
        print(json.dumps([bench(c, a.count) for c in a.concurrency or [1, 16]]), flush=True)


if __name__ == "__main__":
    main()
