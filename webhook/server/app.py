"""The decision API (FastAPI). Thin: parse strictly, authenticate, ask the authority."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from kubewrit.webhook import canonical
from kubewrit.webhook.approval import Approval, Phase
from kubewrit.webhook.authority import ActionInput, Outcome, Refused, outcome_summary
from kubewrit.webhook.canonical import CanonicalError
from kubewrit.webhook.decision import Decision
from kubewrit.webhook.identity import Principal
from kubewrit.webhook.server.models import (
    AdmissionReview,
    ApprovalDecision,
    ApprovalRef,
    ApprovalView,
    DecideRequest,
    DecisionResponse,
    ErrorResponse,
    MonitoredVerdict,
    RecordPage,
    RecordRef,
)
from kubewrit.webhook.server.runtime import Runtime
from kubewrit.webhook.store.sqlite import RecordQuery
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 503)
}


def error(
    status: int, code: str, message: str, decision: DecisionResponse | None = None
) -> JSONResponse:
    body = ErrorResponse.model_validate(
        {"error": {"code": code, "message": message}, "decision": decision}
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def validation_message(exc: ValidationError) -> str:
    problems = []
    for item in exc.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def decision_response(outcome: Outcome) -> DecisionResponse:
    verdict = outcome.verdict
    record = outcome.record
    approval = outcome.approval
    return DecisionResponse(
        decision=verdict.decision.value,
        reason=verdict.reason.value,
        message=verdict.message,
        rule_id=verdict.rule_id,
        risk=verdict.risk,
        risk_rule=verdict.risk_rule,
        policy=verdict.policy,
        policy_hash=verdict.policy_hash,
        action_hash=outcome.action_hash,
        record=RecordRef(chain=record.chain, seq=record.seq, hash=record.hash) if record else None,
        writ=outcome.writ,
        approval=ApprovalRef(
            id=approval.id,
            phase=approval.phase.value,
            expires_at=approval.expires_at,
            poll=f"/v1/approvals/{approval.id}",
        )
        if approval
        else None,
        monitored=MonitoredVerdict(
            decision=verdict.monitored.decision.value,
            reason=verdict.monitored.reason.value,
            rule_id=verdict.monitored.rule_id,
        )
        if verdict.monitored
        else None,
        replayed=bool(outcome.extra.get("replayed")),
    )


def approval_view(approval: Approval, writ: str | None = None) -> ApprovalView:
    data = approval.to_dict()
    outcome = data.pop("outcome")
    data.pop("policy_hash", None)
    data.pop("request_id", None)
    view = ApprovalView.model_validate(data)
    if outcome:  # authority.outcome_summary: DecisionResponse's fields (records carry more)
        view.outcome = DecisionResponse.model_validate({**outcome, "writ": writ})
    return view


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; refuse larger bodies before buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise CanonicalError(
            "payload_too_large", f"body of {declared} bytes exceeds the {limit}-byte limit"
        )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise CanonicalError("payload_too_large", f"body exceeds the {limit}-byte limit")
    return bytes(body)


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    }


def create_app(runtime: Runtime) -> FastAPI:
    authority = runtime.authority
    metrics = runtime.metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in runtime.start:
            hook()
        tasks = [asyncio.create_task(job()) for job in runtime.background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for hook in runtime.stop:
                hook()

    app = FastAPI(
        title="kubewrit",
        version="0.1.0",
        summary="Execution authorization for AI agents: should this specific action run?",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        decision = decision_response(exc.outcome) if exc.outcome else None
        return error(exc.status, exc.code, exc.message, decision)

    @app.exception_handler(CanonicalError)
    async def invalid_action(_: Request, exc: CanonicalError) -> JSONResponse:
        status = 413 if exc.code == "payload_too_large" else 400
        return error(status, exc.code, exc.message)

    @app.exception_handler(ValidationError)
    async def invalid_body(_: Request, exc: ValidationError) -> JSONResponse:
        return error(400, "invalid_request", validation_message(exc))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error(500, "internal", "internal error; the action was not authorized")

    def authenticate(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "unauthenticated", "send `Authorization: Bearer <token>`")
        principal = runtime.authenticator.authenticate(token.strip())
        if principal is None:
            raise Refused(401, "unauthenticated", "token not recognised")
        return principal

    async def decide(principal: Principal, data: Any) -> Outcome:
        request = DecideRequest.model_validate(data)
        started = time.perf_counter()
        try:
            outcome = await authority.decide(
                principal,
                ActionInput(
                    tool=request.tool,
                    args=request.args,
                    operation=request.operation,
                    agent=request.agent,
                    request_id=request.request_id,
                    context=request.context.model_dump() if request.context else None,
                ),
            )
        except Refused as exc:
            if exc.outcome:
                metrics.decisions.labels(
                    exc.outcome.decision.value, exc.outcome.verdict.reason.value
                ).inc()
            raise
        metrics.latency.observe(time.perf_counter() - started)
        metrics.decisions.labels(outcome.decision.value, outcome.verdict.reason.value).inc()
        return outcome

    @app.post(
        "/v1/decide",
        response_model=DecisionResponse,
        responses=ERRORS,
        openapi_extra=openapi_body(DecideRequest),
        summary="Decide one action",
    )
    async def decide_endpoint(request: Request) -> DecisionResponse:
        principal = authenticate(request)
        data = canonical.parse_json(await read_body(request, runtime.max_body), runtime.max_body)
        return decision_response(await decide(principal, data))

    @app.post(
        "/v1/admission",
        responses=ERRORS,
        openapi_extra=openapi_body(AdmissionReview),
        summary="Decide one action wrapped in an admission.k8s.io/v1 AdmissionReview",
    )
    async def admission_endpoint(request: Request) -> JSONResponse:
        principal = authenticate(request)
        data = canonical.parse_json(await read_body(request, runtime.max_body), runtime.max_body)
        review = AdmissionReview.model_validate(data)
        try:
            answer = decision_response(await decide(principal, review.request.object))
        except Refused as exc:
            if exc.outcome is None:
                raise
            answer = decision_response(exc.outcome)
        codes = {"PERMIT": 200, "DEFER": 202, "DENY": 403}
        message = answer.message or answer.reason
        if answer.approval:
            message = f"held for approval {answer.approval.id}: {message}"
        annotations = {
            "kubewrit.io/decision": answer.decision,
            "kubewrit.io/reason": answer.reason,
            "kubewrit.io/rule": answer.rule_id,
            "kubewrit.io/risk": answer.risk,
            "kubewrit.io/action-hash": answer.action_hash,
        }
        if answer.record:
            annotations["kubewrit.io/record"] = f"{answer.record.chain}/{answer.record.seq}"
        if answer.approval:
            annotations["kubewrit.io/approval"] = answer.approval.id
        if answer.writ:
            annotations["kubewrit.io/writ"] = answer.writ
        return JSONResponse(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review.request.uid,
                    "allowed": answer.decision == Decision.PERMIT.value,
                    "status": {
                        "code": codes[answer.decision],
                        "message": message,
                        "reason": answer.reason,
                    },
                    "auditAnnotations": annotations,
                },
            }
        )

    @app.get("/v1/approvals", response_model=list[ApprovalView], responses=ERRORS)
    async def list_approvals(request: Request, phase: str | None = None) -> list[ApprovalView]:
        principal = authenticate(request)
        try:
            wanted = Phase(phase) if phase else None
        except ValueError:
            raise Refused(
                400, "invalid_phase", f"phase must be one of {[p.value for p in Phase]}"
            ) from None
        approvals = authority.approvals.list(wanted, 500)
        if principal.role.value == "agent":
            approvals = [a for a in approvals if a.agent == principal.name]
        return [approval_view(a) for a in approvals]

    @app.get(
        "/v1/approvals/{approval_id}",
        response_model=ApprovalView,
        responses=ERRORS,
        summary="An approval's state; with ?wait=N, long-poll until it is decided",
    )
    async def get_approval(approval_id: str, request: Request, wait: float = 0) -> ApprovalView:
        principal = authenticate(request)
        approval, token = await authority.collect(approval_id, principal, wait)
        return approval_view(approval, token)

    async def resolve(approval_id: str, request: Request, approve: bool) -> ApprovalView:
        principal = authenticate(request)
        raw = await read_body(request, 8 * 1024)
        body = ApprovalDecision.model_validate(canonical.parse_json(raw) if raw.strip() else {})
        return approval_view(await authority.resolve(approval_id, principal, approve, body.reason))

    @app.post(
        "/v1/approvals/{approval_id}/approve",
        response_model=ApprovalView,
        responses=ERRORS,
        openapi_extra=openapi_body(ApprovalDecision),
    )
    async def approve(approval_id: str, request: Request) -> ApprovalView:
        return await resolve(approval_id, request, True)

    @app.post(
        "/v1/approvals/{approval_id}/deny",
        response_model=ApprovalView,
        responses=ERRORS,
        openapi_extra=openapi_body(ApprovalDecision),
    )
    async def deny(approval_id: str, request: Request) -> ApprovalView:
        return await resolve(approval_id, request, False)

    @app.get(
        "/v1/records",
        response_model=RecordPage,
        responses=ERRORS,
        summary="Decision records, oldest first; page with after=<seq> and chain",
    )
    async def records(
        request: Request,
        chain: str | None = None,
        agent: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> RecordPage:
        principal = authenticate(request)
        if principal.role.value == "agent":
            agent = principal.name
        items = runtime.records.query(RecordQuery(chain, agent, tool, decision, after, limit))
        next_after = items[-1].seq if len(items) >= max(1, min(limit, 1000)) else None
        return RecordPage(items=[r.to_dict() for r in items], next_after=next_after)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = runtime.state
        body = {"ready": state.ready, **state.detail()}
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> PlainTextResponse:
        metrics.approvals_pending.set(len(authority.approvals.list(Phase.PENDING, 10000)))
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["create_app", "decision_response", "outcome_summary"]
