"""The decision API (FastAPI). Thin: parse strictly, authenticate, ask the authority.

Bodies are read once, with a size limit, by strict JSON (no duplicate keys, no
NaN, bounded depth; `canonical.parse_json`) and validated into the pydantic
models the OpenAPI document is generated from. Authentication is a dependency.
Domain errors are mapped to HTTP here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kubewrit.webhook import __version__, canonical, errors
from kubewrit.webhook.approval import Approval
from kubewrit.webhook.authority import ActionInput, Outcome
from kubewrit.webhook.backend import RecordQuery
from kubewrit.webhook.decision import Decision, Phase
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.server.models import (
    AdmissionReview,
    ApprovalDecision,
    ApprovalRef,
    ApprovalView,
    DecideRequest,
    DecisionResponse,
    ErrorResponse,
    LimitEntryView,
    LimitUsageView,
    MonitoredVerdict,
    RecordPage,
    RecordRef,
)
from kubewrit.webhook.server.runtime import Runtime
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.PayloadTooLarge, 413),
    (errors.InvalidRequest, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unsupported, 501),
    (errors.Unavailable, 503),
]
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for _, status in STATUS}
MAX_SEQ = 2**62


def status_of(exc: errors.DomainError) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


def error(
    status: int, code: str, message: str, decision: DecisionResponse | None = None
) -> JSONResponse:
    body = ErrorResponse.model_validate(
        {"error": {"code": code, "message": message}, "decision": decision}
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def validation_message(problems: Any) -> str:
    parts = []
    for item in list(problems)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decision_response(outcome: Outcome) -> DecisionResponse:
    verdict, record, approval = outcome.verdict, outcome.record, outcome.approval
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
        limits=[LimitEntryView.model_validate(e) for e in record.limits]
        if record and record.limits
        else None,
    )


def approval_view(approval: Approval, writ: str | None = None) -> ApprovalView:
    data = approval.to_dict()
    outcome = data.pop("outcome")
    view = ApprovalView.model_validate(
        {k: v for k, v in data.items() if k in ApprovalView.model_fields}
    )
    if outcome:  # approval.outcome_summary: DecisionResponse's fields (records carry more)
        view.outcome = DecisionResponse.model_validate({**outcome, "writ": writ})
    return view


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; refuse larger bodies before buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise canonical.PayloadTooLarge(declared, limit)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise canonical.PayloadTooLarge(f"more than {limit}", limit)
    return bytes(body)


class StrictJSONRoute(APIRoute):
    """Reads the body once, bounded, as strict JSON, before FastAPI validates it into models."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                limit = request.app.state.runtime.max_body
                raw = await read_body(request, limit)
                request._body = raw
                if raw.strip():
                    request._json = canonical.parse_json(raw, limit)
            return await handler(request)

        return strict


class DecideRoute(APIRoute):
    """`POST /v1/decide`, the route every decision takes, resolved by hand.

    Declared like any route (body `DecideRequest`, a `Caller`, answer `DecisionResponse`:
    that is what OpenAPI documents), but served without FastAPI's per-request dependency
    solving, response re-validation and generic encoding, which cost a decision more CPU
    than everything else in the HTTP layer. Same steps, same order, same errors: the
    body is read bounded as strict JSON, the caller authenticated (`principal_of`), the
    body validated into the model (errors located under `body`, as FastAPI does), and
    the endpoint's model serialized by pydantic.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def direct(request: Request) -> Response:
            limit = request.app.state.runtime.max_body
            raw = await read_body(request, limit)
            data = canonical.parse_json(raw, limit) if raw.strip() else None
            scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
            principal = await principal_of(request, scheme, credentials)
            body = json_body(request, data, raw)
            answer: DecisionResponse = await endpoint(body, principal)
            return Response(
                DecisionResponse.__pydantic_serializer__.to_json(answer),
                media_type="application/json",
            )

        return direct


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class KubewritAPI(FastAPI):
    """FastAPI, with `POST /v1/decide` reached by hand as well as resolved by hand.

    Before a request reaches a route, Starlette passes it through its error middleware,
    FastAPI's telemetry and body-limit wrappers, the exception middleware and the router:
    a measurable share of a decision's CPU. The decision route skips them; its errors go
    to the very exception handlers the rest of the API uses (`install_error_handlers`),
    found as Starlette finds them, so the HTTP mapping still has one owner. Middleware
    added to the app (the console's headers, for /ui) never sees `/v1/decide`.
    """

    decide: Handler | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.decide is None
            or scope["type"] != "http"
            or scope["path"] != "/v1/decide"
            or scope["method"] != "POST"
        ):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await self.decide(request)
        except Exception as exc:
            handler = next(
                (
                    self.exception_handlers[kind]
                    for kind in type(exc).__mro__
                    if kind in self.exception_handlers
                ),
                None,
            )
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


def json_body(request: Request, data: Any, raw: bytes) -> DecideRequest:
    """The body as the model, or RequestValidationError located as FastAPI locates it."""
    kind = (request.headers.get("content-type") or "application/json").split(";")[0].strip()
    subtype = kind.partition("/")[2].lower()
    if subtype != "json" and not subtype.endswith("+json"):
        data = raw  # not JSON by its own account: bytes, which no model accepts
    if data is None:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        return DecideRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in exc.errors()]
        ) from None


bearer = HTTPBearer(auto_error=False, description="An agent's or approver's token")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from its bearer token (see `principal_of`)."""
    if credentials is None:
        raise errors.Unauthenticated("unauthenticated", "send `Authorization: Bearer <token>`")
    return await principal_of(request, credentials.scheme, credentials.credentials)


async def principal_of(request: Request, scheme: str, credentials: str) -> Principal:
    if scheme.lower() != "bearer" or not credentials:
        raise errors.Unauthenticated("unauthenticated", "send `Authorization: Bearer <token>`")
    runtime: Runtime = request.app.state.runtime
    token = credentials.strip()
    # Known at once (a token file, a cached TokenReview) on the event loop; a thread only
    # for a token that must be asked about (a review over the network, or no principal).
    authenticator = runtime.authenticator
    principal = authenticator.recall(token) or await run_in_threadpool(
        authenticator.authenticate, token
    )
    if principal is None:
        raise errors.Unauthenticated("unauthenticated", "token not recognised")
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.DomainError)
    async def refused(_: Request, exc: errors.DomainError) -> JSONResponse:
        decision = decision_response(exc.outcome) if exc.outcome else None
        return error(status_of(exc), exc.code, exc.message, decision)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(ValidationError)
    async def invalid_body(_: Request, exc: ValidationError) -> JSONResponse:
        return error(400, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error(500, "internal", "internal error; the action was not authorized")


def decisions_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, responses=ERRORS)
    authority, metrics = runtime.authority, runtime.metrics

    async def decide(principal: Principal, request: DecideRequest) -> Outcome:
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
        except errors.DomainError as exc:
            if exc.outcome:
                metrics.decisions.labels(
                    exc.outcome.decision.value, exc.outcome.verdict.reason.value
                ).inc()
            raise
        metrics.latency.observe(time.perf_counter() - started)
        metrics.decisions.labels(outcome.decision.value, outcome.verdict.reason.value).inc()
        return outcome

    async def decide_endpoint(body: DecideRequest, principal: Caller) -> DecisionResponse:
        return decision_response(await decide(principal, body))

    router.add_api_route(
        "/v1/decide",
        decide_endpoint,
        methods=["POST"],
        response_model=DecisionResponse,
        summary="Decide one action",
        route_class_override=DecideRoute,
    )

    @router.post(
        "/v1/admission",
        summary="Decide one action wrapped in an admission.k8s.io/v1 AdmissionReview",
    )
    async def admission_endpoint(review: AdmissionReview, principal: Caller) -> JSONResponse:
        action = DecideRequest.model_validate(review.request.object)
        try:
            answer = decision_response(await decide(principal, action))
        except errors.DomainError as exc:
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

    return router


def approvals_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(route_class=StrictJSONRoute, responses=ERRORS, tags=["approvals"])
    workflow = runtime.authority.approvals

    @router.get("/v1/approvals", response_model=list[ApprovalView])
    async def list_approvals(principal: Caller, phase: Phase | None = None) -> list[ApprovalView]:
        return [approval_view(a) for a in workflow.visible_to(principal, phase, 500)]

    @router.get(
        "/v1/approvals/{approval_id}",
        response_model=ApprovalView,
        summary="An approval's state; with ?wait=N, long-poll until it is decided",
    )
    async def get_approval(
        approval_id: str,
        principal: Caller,
        wait: Annotated[float, Query(ge=0, le=300)] = 0,
    ) -> ApprovalView:
        approval, token = await workflow.collect(approval_id, principal, wait)
        return approval_view(approval, token)

    @router.post(
        "/v1/approvals/{approval_id}/{ruling}",
        response_model=ApprovalView,
        summary="An approver approves or denies (approver tokens only)",
    )
    async def decide_approval(
        approval_id: str,
        ruling: Literal["approve", "deny"],
        principal: Caller,
        body: ApprovalDecision | None = None,
    ) -> ApprovalView:
        reason = body.reason if body else None
        approved = ruling == "approve"
        return approval_view(await workflow.resolve(approval_id, principal, approved, reason))

    return router


def limits_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(responses=ERRORS, tags=["limits"])
    budgets = runtime.authority.backend.budgets

    @router.get(
        "/v1/limits",
        response_model=list[LimitUsageView],
        summary="Each limit's current count, per scope (approvers only)",
    )
    async def limits(principal: Caller) -> list[LimitUsageView]:
        if principal.role is not Role.APPROVER:
            raise errors.Forbidden("not_an_approver", "limit usage spans agents: approvers only")
        usage = await asyncio.to_thread(budgets.usage, time.time())
        return [
            LimitUsageView(
                limit=u.limit,
                scope=u.scope,
                used=str(u.used),
                bound=str(u.bound),
                window=u.window,
                effect=u.effect,
            )
            for u in usage
        ]

    return router


def records_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(responses=ERRORS, tags=["records"])
    queries = runtime.authority.backend.queries

    @router.get(
        "/v1/records",
        response_model=RecordPage,
        summary="Decision records, oldest first; page with after=<seq> and chain",
    )
    async def records(
        principal: Caller,
        chain: Annotated[str | None, Query(max_length=253)] = None,
        agent: Annotated[str | None, Query(max_length=253)] = None,
        tool: Annotated[str | None, Query(max_length=256)] = None,
        decision: Decision | None = None,
        after: Annotated[int | None, Query(ge=-1, le=MAX_SEQ)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RecordPage:
        namespace = None
        if principal.role is Role.AGENT:
            agent, namespace = principal.name, principal.namespace
        query = RecordQuery(
            chain, agent, tool, decision.value if decision else None, after, limit, namespace
        )
        items = queries.query(query)
        next_after = items[-1].seq if len(items) >= limit else None
        return RecordPage(items=[r.to_dict() for r in items], next_after=next_after)

    return router


def health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        state = runtime.state
        body = {"ready": state.ready, **state.detail()}
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @router.get("/metrics")
    async def metrics_endpoint() -> PlainTextResponse:
        pending = runtime.authority.backend.approvals.list(Phase.PENDING, 10000)
        runtime.metrics.approvals_pending.set(len(pending))
        usage = await asyncio.to_thread(runtime.authority.backend.budgets.usage, time.time())
        runtime.metrics.observe_limits(usage)
        return PlainTextResponse(
            generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return router


def create_app(runtime: Runtime) -> FastAPI:
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

    app = KubewritAPI(
        title="kubewrit",
        version=__version__,
        summary="Execution authorization for AI agents: should this specific action run?",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for make in (decisions_router, approvals_router, limits_router, records_router, health_router):
        router = make(runtime)
        app.include_router(router)
        for route in router.routes:
            if isinstance(route, DecideRoute):
                app.decide = route.get_route_handler()
    return app


__all__ = ["create_app", "decision_response"]
