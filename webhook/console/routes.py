"""The console's pages at /ui: queue (live), records, policies, playground, sign-in.

Server-rendered with Jinja2 (autoescaped); htmx swaps fragments and follows the
queue over server-sent events, and every form also works as a plain POST. Every
response carries a strict Content-Security-Policy (scripts only from /ui/static, no
inline script or style, no eval), and every state-changing request must carry the
session's CSRF token and come from this origin.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from kubewrit.webhook import canonical, policy
from kubewrit.webhook.approval import Approval
from kubewrit.webhook.authority import admit
from kubewrit.webhook.canonical import Action, CanonicalError
from kubewrit.webhook.chain import Record
from kubewrit.webhook.console import display, explain
from kubewrit.webhook.console.backend import (
    ActionRefused,
    ConsoleBackend,
    RecordFilter,
    SignInRefused,
)
from kubewrit.webhook.console.sessions import (
    LOGIN_COOKIE,
    LOGIN_SECONDS,
    SESSION_COOKIE,
    Session,
    Sessions,
    token_matches,
)
from kubewrit.webhook.decision import Decision, Phase, Verdict
from kubewrit.webhook.policy.evaluator import history_needed
from kubewrit.webhook.policy.history import no_history_for
from kubewrit.webhook.policy.model import Policy
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/ui"
HERE = Path(__file__).parent
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null`
    "Cache-Control": "no-store",
}
RECENT_DECIDED = 10
AGENT_HISTORY = 20
EVENT_STREAM_SECONDS = 15.0  # streams end and the browser reconnects: shutdown never waits long
PLAYGROUND_EXAMPLE = {
    "agent": "support-agent",
    "tool": "process_refund",
    "args": {"amount": 340, "order_id": "A-1001"},
}


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        visible=display.visible,
        folded=display.folded,
        when=display.when,
        short_hash=display.short_hash,
    )
    env.globals.update(prefix=PREFIX, condition_text=explain.condition_text)
    return env


def preview(policies: Sequence[Policy], action: Action) -> Verdict:
    """The policies' verdict as if the agent had no history (sequence rules see none)."""
    return policy.evaluate(policies, action, no_history_for(history_needed(policies, action)))


class Refusal(Exception):
    """A request the console answers with a page naming the problem (never a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NeedsSignIn(Exception):
    pass


def same_origin(request: Request) -> bool:
    """Browsers say where a request came from; anything cross-site is refused."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def seconds_left(approval: Approval, now: float) -> int:
    return max(0, int(approval.expires_at - now))


def final_reason(approval: Approval, now: float) -> str:
    """Why an approval can no longer be decided, in words."""
    if approval.phase is Phase.PENDING and approval.expired(now):
        return "expired: nobody decided in time; it can no longer be approved"
    if approval.phase is Phase.EXPIRED:
        return "expired: nobody decided in time; it can no longer be approved"
    by = f" by {approval.decided_by}" if approval.decided_by else ""
    if approval.phase is Phase.DECIDING:
        return f"being decided{by}: the decision is being recorded"
    return f"already {approval.phase.value.lower()}{by}: an approval is decided only once"


class Console:
    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend
        self.sessions = Sessions()
        self.env = templates()

    # -- rendering ----------------------------------------------------------------

    def render(self, name: str, request: Request, session: Session | None, **data: Any) -> str:
        return self.env.get_template(name).render(
            request=request,
            session=session,
            backend=self.backend,
            now=time.time(),
            **data,
        )

    def page(
        self,
        name: str,
        request: Request,
        session: Session | None,
        status: int = 200,
        **data: Any,
    ) -> HTMLResponse:
        return HTMLResponse(self.render(name, request, session, **data), status_code=status)

    # -- sessions -----------------------------------------------------------------

    async def session(self, request: Request) -> Session:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise NeedsSignIn()
        if not await self.backend.still_valid(session.viewer):
            self.sessions.close(session.id)
            raise NeedsSignIn()
        return session

    async def changing(self, request: Request) -> tuple[Session, dict[str, str]]:
        """A state-changing form: signed in, same origin, and the session's CSRF token."""
        session = await self.session(request)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not same_origin(request) or not token_matches(session.csrf, form.get("csrf")):
            raise Refusal(403, "the form's security token is missing or stale: reload the page")
        return session, form

    # -- queue --------------------------------------------------------------------

    async def agent_context(self, agent: str, tool: str) -> dict[str, Any] | None:
        """The agent's recent decisions; None when this approver may not read records."""
        try:
            history = await self.backend.records(RecordFilter(agent=agent, limit=1000))
        except ActionRefused:
            return None
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        todays = [r for r in history if r.time.startswith(today) and r.tool == tool]
        decisions = [r for r in history if r.kind == "decision"]
        return {
            "recent": list(reversed(decisions[-AGENT_HISTORY:])),
            "today_tool": tool,
            "today": Counter(r.decision for r in todays if r.kind == "decision"),
            "today_total": sum(1 for r in todays if r.kind == "decision"),
        }

    async def current_verdict(self, approval: Approval) -> Verdict | None:
        """What the policies in force say now (the risk rule; what approval would re-check)."""
        try:
            view = await self.backend.policies()
            return preview(view.policies, approval.held_action())
        except (ActionRefused, CanonicalError):  # no right to read policies; an odd action
            return None

    async def queue_data(self) -> dict[str, Any]:
        approvals = await self.backend.approvals()
        now = time.time()
        pending = sorted(
            (a for a in approvals if a.phase is Phase.PENDING and not a.expired(now)),
            key=lambda a: a.expires_at,
        )
        decided = sorted(
            (a for a in approvals if a not in pending),
            key=lambda a: a.decided_at or a.expires_at,
            reverse=True,
        )[:RECENT_DECIDED]
        contexts: dict[tuple[str, str], dict[str, Any] | None] = {}
        verdicts: dict[str, Verdict | None] = {}
        for approval in pending:
            key = (approval.agent, approval.tool)
            if key not in contexts:
                contexts[key] = await self.agent_context(*key)
            verdicts[approval.id] = await self.current_verdict(approval)
        return {
            "pending": pending,
            "decided": decided,
            "contexts": contexts,
            "verdicts": verdicts,
            "final_reason": final_reason,
            "seconds_left": seconds_left,
        }

    @staticmethod
    def fingerprint(approvals: list[Approval]) -> str:
        return json.dumps(sorted((a.id, a.phase.value) for a in approvals))

    async def events(self, request: Request, session: Session) -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        seen = None
        started = time.monotonic()
        while time.monotonic() - started < EVENT_STREAM_SECONDS:
            if await request.is_disconnected():
                return
            if not await self.backend.still_valid(session.viewer):
                return
            try:
                approvals = await self.backend.approvals()
            except ActionRefused as exc:  # the API server is away or refuses: say so, retry
                yield f"event: problem\ndata: {exc.message.splitlines()[0] if exc.message else ''}\n\n"
                await asyncio.sleep(self.backend.poll_seconds)
                continue
            now = time.time()
            current = self.fingerprint(approvals) + str(
                [a.id for a in approvals if a.phase is Phase.PENDING and a.expired(now)]
            )
            if current != seen:
                seen = current
                html = self.render("_queue.html", request, session, **await self.queue_data())
                data = "".join(f"data: {line}\n" for line in html.splitlines())
                yield f"event: queue\n{data}\n"
            else:
                yield ": idle\n\n"
            await asyncio.sleep(self.backend.poll_seconds)

    # -- playground ---------------------------------------------------------------

    async def try_action(self, text: str, namespace: str | None) -> dict[str, Any]:
        try:
            data = canonical.parse_json(text.encode())
        except CanonicalError as exc:
            return {"error": exc.message}
        if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
            return {"error": 'write one action as a JSON object: {"agent", "tool", "args"}'}
        agent = data.get("agent")
        if not isinstance(agent, str) or not agent:
            return {"error": "name the agent the action is for (`agent`)"}
        try:
            action, refusal = admit(
                agent, data["tool"], data.get("args"), data.get("operation"), None, namespace
            )
        except CanonicalError as exc:
            return {"error": exc.message}
        view = await self.backend.policies()
        verdict = refusal or preview(view.policies, action)
        return {
            "verdict": verdict,
            "action": action,
            "action_hash": canonical.action_hash(action),
            "explanation": explain.explain(view.policies, action) if refusal is None else None,
        }


def router(console: Console) -> APIRouter:
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)
    backend = console.backend

    def redirect(path: str) -> RedirectResponse:
        return RedirectResponse(PREFIX + path, status_code=303)

    def htmx(request: Request) -> bool:
        return request.headers.get("hx-request") == "true"

    @routes.get("/login")
    async def login_form(request: Request) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or _new_login_token()
        response = console.page("login.html", request, None, login_token=token)
        _set_cookie(response, request, LOGIN_COOKIE, token, LOGIN_SECONDS)
        return response

    @routes.post("/login")
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        token = expected or _new_login_token()
        if not same_origin(request) or not token_matches(expected, form.get("login_token")):
            stale = console.page(
                "login.html",
                request,
                None,
                status=403,
                login_token=token,
                error="the sign-in form expired: try again",
            )
            _set_cookie(stale, request, LOGIN_COOKIE, token, LOGIN_SECONDS)
            return stale
        try:
            viewer = await backend.sign_in(form.get("secret", ""))
        except SignInRefused as exc:
            return console.page(
                "login.html", request, None, status=401, login_token=token, error=str(exc)
            )
        session = console.sessions.open(viewer)
        response = redirect("/")
        _set_cookie(response, request, SESSION_COOKIE, session.id, int(console.sessions.lifetime))
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        session, _ = await console.changing(request)
        console.sessions.close(session.id)
        response = redirect("/login")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @routes.get("/")
    async def queue(request: Request) -> Response:
        session = await console.session(request)
        return console.page(
            "queue.html", request, session, active="queue", **await console.queue_data()
        )

    @routes.get("/events")
    async def events(request: Request) -> StreamingResponse:
        session = await console.session(request)
        return StreamingResponse(
            console.events(request, session),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    @routes.get("/approvals/{approval_id}")
    async def approval_page(request: Request, approval_id: str) -> Response:
        session = await console.session(request)
        approval = await backend.approval(approval_id)
        if approval is None:
            raise Refusal(404, f"no approval {approval_id!r}")
        data = await console.queue_data()
        return console.page(
            "approval.html",
            request,
            session,
            active="queue",
            a=approval,
            notice=request.query_params.get("notice"),
            **{k: v for k, v in data.items() if k not in ("pending", "decided")},
            context=await console.agent_context(approval.agent, approval.tool),
            verdict=await console.current_verdict(approval),
        )

    @routes.post("/approvals/{approval_id}/decide")
    async def decide(request: Request, approval_id: str) -> Response:
        session, form = await console.changing(request)
        choice = form.get("decision")
        if choice not in ("approve", "deny"):
            raise Refusal(400, "choose approve or deny")
        reason = (form.get("reason") or "").strip()[:500] or None
        error = None
        try:
            approval = await backend.decide(
                session.viewer, approval_id, choice == "approve", reason
            )
        except ActionRefused as exc:
            error = exc.message
            found = await backend.approval(approval_id)
            if found is None:
                raise Refusal(404, f"no approval {approval_id!r}") from None
            approval = found
        if not htmx(request):
            notice = f"refused: {error}" if error else None
            return redirect(
                f"/approvals/{approval_id}"
                + (f"?{urlencode({'notice': notice})}" if notice else "")
            )
        data = await console.queue_data()
        context = await console.agent_context(approval.agent, approval.tool)
        html = console.render(
            "_approval.html",
            request,
            session,
            a=approval,
            error=error,
            just_decided=error is None,
            context=context,
            verdict=await console.current_verdict(approval),
            final_reason=data["final_reason"],
            seconds_left=data["seconds_left"],
        )
        return HTMLResponse(html)

    @routes.get("/records")
    async def records(request: Request) -> Response:
        session = await console.session(request)
        params = request.query_params
        query = RecordFilter(
            agent=params.get("agent") or None,
            tool=params.get("tool") or None,
            decision=params.get("decision") or None,
            reason=params.get("reason") or None,
            since=params.get("since") or None,
        )
        found = await backend.records(query)
        return console.page(
            "records.html",
            request,
            session,
            active="records",
            records=list(reversed(found)),
            query=query,
            chain=await backend.chain_status(),
        )

    @routes.get("/records/{chain}/{seq}")
    async def record(request: Request, chain: str, seq: int) -> Response:
        session = await console.session(request)
        found: Record | None = await backend.record(chain, seq)
        if found is None:
            raise Refusal(404, f"no record {chain}/{seq}")
        return console.page(
            "record.html",
            request,
            session,
            active="records",
            r=found,
            chain=await backend.chain_status(),
        )

    @routes.get("/policies")
    async def policies(request: Request) -> Response:
        session = await console.session(request)
        return console.page(
            "policies.html", request, session, active="policies", view=await backend.policies()
        )

    @routes.get("/playground")
    async def playground(request: Request) -> Response:
        session = await console.session(request)
        return console.page(
            "playground.html",
            request,
            session,
            active="playground",
            text=json.dumps(PLAYGROUND_EXAMPLE, indent=2),
            namespace=backend.namespace or "",
            result=None,
        )

    @routes.post("/playground")
    async def try_it(request: Request) -> Response:
        session, form = await console.changing(request)
        text = form.get("action", "")
        namespace = (form.get("namespace") or "").strip() or backend.namespace
        result = await console.try_action(text, namespace)
        return console.page(
            "playground.html",
            request,
            session,
            active="playground",
            text=text,
            namespace=namespace or "",
            result=result,
            Decision=Decision,
        )

    return routes


def _new_login_token() -> str:
    return secrets.token_urlsafe(24)


def _set_cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


class SecurityHeaders:
    """Adds the console's headers to every /ui response (pure ASGI: the API is untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for header, value in SECURITY_HEADERS.items():
                    if header not in headers:
                        headers[header] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def mount(app: FastAPI, backend: ConsoleBackend) -> Console:
    """Serve the console for `backend` at /ui on `app`."""
    console = Console(backend)
    app.include_router(router(console))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(NeedsSignIn)
    async def sign_in_first(request: Request, _: NeedsSignIn) -> Response:
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
        return RedirectResponse(f"{PREFIX}/login", status_code=303)

    @app.exception_handler(ActionRefused)
    async def backend_refused(request: Request, exc: ActionRefused) -> Response:
        message = f"the backend refused: {exc.message}"
        return console.page("error.html", request, None, status=502, message=message)

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> Response:
        return console.page("error.html", request, None, status=exc.status, message=exc.message)

    app.add_middleware(SecurityHeaders)

    @app.get(PREFIX, include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    return console
