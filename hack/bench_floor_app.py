"""The floor for HTTP benchmarks: a constant answer on the stack kubewrit serves on.

FastAPI on uvicorn with the same defaults (uvloop, httptools) as `kubewrit serve`;
the handler reads the body and answers a constant, so what a run measures is the
HTTP/ASGI stack alone. Run by bench_decide.py:

    python -m uvicorn bench_floor_app:app --app-dir hack --port P [--workers N]
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()
ANSWER = {"decision": "PERMIT", "reason": "rule_allow", "rule_id": "small-refunds"}


@app.post("/v1/decide")
async def decide(request: Request) -> dict[str, str]:
    await request.body()
    return ANSWER


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
