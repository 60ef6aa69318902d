"""The governance core every integration shares: decide, wait, verify, then run.

A framework adapter only has to say "this tool, these arguments, this callable";
everything that makes the call safe lives here, once:

- decide with a fresh request id (so the client may retry without a second decision);
- on DEFER, long-poll the approval up to `approval_timeout`, then run only on a
  PERMIT that the server re-evaluated after the human approved;
- right before the callable runs, verify the writ against the exact arguments it
  is about to receive (a private copy, so nothing can change them afterwards);
- anything else (DENY, approval denied or expired, timeout, unreachable server,
  malformed answer, rejected writ) raises, and the callable never runs.

The protocol is written once as a generator that yields the HTTP calls it needs
(`_flow`); a blocking and an async driver perform them. Sync and async callers
therefore follow the same steps, not two copies of them.

Writ signatures are checked when a trusted public key is configured (`public_key=`,
KUBEWRIT_PUBLIC_KEY or KUBEWRIT_PUBLIC_KEY_FILE). Without one the writ's claims are
still checked (action hash, agent, expiry, single use), which catches changed
arguments but not a forged writ: configure the key wherever the server is not
trusted to be the only thing the client talks to.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubewrit.webhook import canonical, keys, writ
from kubewrit.webhook.canonical import CanonicalError
from kubewrit.webhook.client.errors import (
    ActionDenied,
    ApiError,
    ApprovalTimeout,
    GovernanceUnavailable,
    KubewritError,
)
from kubewrit.webhook.client.http import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    AsyncClient,
    Client,
    new_request_id,
)
from kubewrit.webhook.decision import Decision, Phase, Reason

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_APPROVAL_TIMEOUT = 300.0
LONG_POLL_SECONDS = 25.0
DECISIONS = tuple(Decision)


@dataclass(frozen=True)
class Permit:
    """A PERMIT (direct, or after approval): the decision and its writ, not yet used."""

    tool: str
    operation: str | None
    writ: str
    decision: dict[str, Any] = field(repr=False)
    approval_id: str | None = None

    @property
    def action_hash(self) -> str:
        return str(self.decision.get("action_hash", ""))

    @property
    def record(self) -> dict[str, Any] | None:
        record = self.decision.get("record")
        return record if isinstance(record, dict) else None


@dataclass(frozen=True)
class _Call:
    """One HTTP call the protocol needs; performed by a driver."""

    method: str
    kwargs: dict[str, Any]


def jsonable(value: Any) -> Any:
    """The JSON form of tool arguments (pydantic models, enums, dates become JSON values).

    Plain JSON passes through unchanged, so the hash of a model's tool call is
    the same whichever framework parsed it.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    from pydantic_core import to_jsonable_python

    return jsonable(to_jsonable_python(value))


def describe(error: KubewritError, tool: str) -> str:
    """A message an agent can relay to its user: what happened, why, and the record."""
    where = []
    if error.rule_id:
        where.append(f"rule {error.rule_id}")
    if error.record_ref:
        where.append(f"record {error.record_ref}")
    if error.approval_id:
        where.append(f"approval {error.approval_id}")
    suffix = f" [{', '.join(where)}]" if where else ""
    if isinstance(error, ApprovalTimeout):
        return (
            f"The call to {tool} needs a human approval that was not given in time; "
            f"it did not run. ({error.message}){suffix}"
        )
    if isinstance(error, GovernanceUnavailable):
        return (
            f"The call to {tool} did not run: the authorization service gave no usable "
            f"answer ({error.code}: {error.message}).{suffix}"
        )
    return (
        f"The call to {tool} was denied by policy and did not run: {error.message} "
        f"(reason: {error.code}){suffix}"
    )


def _load_key(public_key: str | bytes | keys.Verifier | None) -> keys.Verifier | None:
    if isinstance(public_key, keys.Verifier):
        return public_key
    if public_key is None:
        public_key = os.environ.get("KUBEWRIT_PUBLIC_KEY")
        key_file = os.environ.get("KUBEWRIT_PUBLIC_KEY_FILE")
        if public_key is None and key_file:
            public_key = Path(key_file).read_text()
    return keys.load_public(public_key) if public_key else None


def _malformed(message: str) -> GovernanceUnavailable:
    return GovernanceUnavailable("malformed_response", message)


class Governor:
    """Decides, waits for approvals and checks writs for one agent; shared by all adapters.

    One Governor can serve sync and async callers, on any number of event loops.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        agent: str | None = None,
        token_file: str | Path | None = None,
        public_key: str | bytes | keys.Verifier | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT,
        session: str | None = None,
        framework: str | None = None,
        client: Client | None = None,
        namespace: str | None = None,
    ) -> None:
        self.agent = agent or os.environ.get("KUBEWRIT_AGENT") or None
        # In Kubernetes the agent's namespace is part of the action the writ covers.
        self.namespace = namespace or os.environ.get("KUBEWRIT_NAMESPACE") or None
        self.approval_timeout = approval_timeout
        self.session = session
        self.framework = framework
        self.verifier = _load_key(public_key)
        self.replay = writ.ReplayCache()
        self._settings = dict(
            url=url, token=token, token_file=token_file, timeout=timeout, retries=retries
        )
        self.client = client or Client(**self._settings)  # type: ignore[arg-type]
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        if self.verifier is None:
            log.info(
                "kubewrit: no public key configured; writ claims are checked, signatures are not"
            )

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __enter__(self) -> Governor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def async_client(self) -> AsyncClient:
        """The async client of the running loop (httpx connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = AsyncClient(**self._settings)  # type: ignore[arg-type]
        return client

    # -- the protocol, once ---------------------------------------------------

    def _context(self, framework: str | None, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        context: dict[str, Any] = {}
        if framework or self.framework:
            context["framework"] = framework or self.framework
        if self.session:
            context["session"] = self.session
        if metadata:
            context["metadata"] = dict(metadata)
        return context

    def _flow(
        self,
        tool: str,
        args: Mapping[str, Any],
        operation: str | None,
        framework: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Generator[_Call, Any, Permit]:
        try:
            plain = jsonable(args)
            canonical.check_value(plain)
        except (CanonicalError, TypeError, ValueError) as exc:
            code = getattr(exc, "code", "invalid_action")
            raise ApiError(code, f"arguments of {tool} cannot be authorized: {exc}") from None
        body = dict(
            tool=tool,
            args=plain,
            operation=operation,
            context=self._context(framework, metadata) or None,
            request_id=new_request_id(),
            agent=self.agent,
        )
        try:
            answer = yield _Call("decide", body)
        except ApiError as exc:
            if exc.decision.get("decision") == "DENY":
                raise ActionDenied(
                    str(exc.decision.get("reason") or exc.code),
                    exc.message,
                    exc.status,
                    exc.decision,
                ) from None
            raise
        decision = answer.get("decision")
        if decision not in DECISIONS or not isinstance(answer.get("action_hash"), str):
            raise _malformed(f"decision answer without a valid decision: {decision!r}")
        if decision == Decision.DENY:
            raise ActionDenied(
                str(answer.get("reason") or "denied"),
                str(answer.get("message") or "denied by policy"),
                None,
                answer,
            )
        if decision == Decision.PERMIT:
            return self._permit(tool, operation, answer, None)
        approval = answer.get("approval")
        if not isinstance(approval, dict) or not isinstance(approval.get("id"), str):
            raise _malformed("DEFER without an approval id")
        approval_id = approval["id"]
        deadline = time.monotonic() + self.approval_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            view = yield _Call(
                "approval",
                {"approval_id": approval_id, "wait": round(min(remaining, LONG_POLL_SECONDS), 3)},
            )
            try:
                phase = Phase(view.get("phase"))
            except ValueError:
                raise _malformed(f"approval {approval_id} in unknown phase") from None
            if phase.open:
                continue
            outcome = view.get("outcome") if isinstance(view.get("outcome"), dict) else {}
            outcome = {**outcome, "approval": {"id": approval_id, "phase": phase.value}}
            granted = outcome.get("decision") == Decision.PERMIT
            if phase in (Phase.APPROVED, Phase.CONSUMED) and granted:
                return self._permit(tool, operation, outcome, approval_id)
            if phase in (Phase.DENIED, Phase.EXPIRED) or outcome.get("decision") == Decision.DENY:
                default = (
                    Reason.APPROVAL_DENIED if phase is Phase.DENIED else Reason.APPROVAL_EXPIRED
                )
                raise ActionDenied(
                    str(outcome.get("reason") or default),
                    str(outcome.get("message") or f"approval {phase.value}"),
                    None,
                    outcome,
                )
            raise _malformed(f"approval {approval_id} {phase.value} without a usable outcome")
        raise ApprovalTimeout(
            "approval_timeout",
            f"approval {approval_id} for {tool} was not decided within {self.approval_timeout:g}s",
            None,
            answer,
        )

    def _permit(
        self, tool: str, operation: str | None, answer: dict[str, Any], approval_id: str | None
    ) -> Permit:
        token = answer.get("writ")
        if not isinstance(token, str) or not token:
            raise _malformed("PERMIT without a writ")
        return Permit(tool, operation, token, answer, approval_id)

    # -- drivers ------------------------------------------------------------

    def check(
        self,
        tool: str,
        args: Mapping[str, Any],
        *,
        operation: str | None = None,
        framework: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Permit:
        """Decide (and wait for approval if needed). Returns a Permit or raises."""
        flow = self._flow(tool, args, operation, framework, metadata)
        try:
            call = next(flow)
            while True:
                try:
                    result = getattr(self.client, call.method)(**call.kwargs)
                except KubewritError as exc:
                    call = flow.throw(exc)
                    continue
                call = flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def acheck(
        self,
        tool: str,
        args: Mapping[str, Any],
        *,
        operation: str | None = None,
        framework: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Permit:
        """`check` for event loops."""
        client = self.async_client()
        flow = self._flow(tool, args, operation, framework, metadata)
        try:
            call = next(flow)
            while True:
                try:
                    result = await getattr(client, call.method)(**call.kwargs)
                except KubewritError as exc:
                    call = flow.throw(exc)
                    continue
                call = flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # -- the writ check -------------------------------------------------------

    def authorize(self, permit: Permit, args: Mapping[str, Any]) -> writ.WritClaims:
        """Verify the writ against the arguments about to run; single use.

        Raises ActionDenied (`writ_<why>`) if the writ does not cover exactly
        this action: changed arguments, another agent, expired, forged, reused.
        """
        try:
            agent = self.agent or str(writ.claims_of(permit.writ)["sub"])
            action = canonical.build_action(
                agent, permit.tool, jsonable(args), permit.operation, namespace=self.namespace
            )
            return writ.verify(permit.writ, self.verifier, action, agent=agent, replay=self.replay)
        except writ.WritRejected as exc:
            raise ActionDenied(f"writ_{exc.code}", str(exc), None, permit.decision) from None
        except (CanonicalError, KeyError) as exc:
            raise ActionDenied(
                "writ_malformed", f"cannot check the writ: {exc}", None, permit.decision
            ) from None

    # -- decide, verify, run ----------------------------------------------------

    def execute(
        self, permit: Permit, args: Mapping[str, Any], fn: Callable[[dict[str, Any]], T]
    ) -> T:
        """Run `fn` on a private copy of `args`, after checking the writ against that copy."""
        frozen = copy.deepcopy(dict(args))
        self.authorize(permit, frozen)
        return fn(frozen)

    def run(
        self,
        tool: str,
        args: Mapping[str, Any],
        fn: Callable[[dict[str, Any]], T],
        *,
        operation: str | None = None,
        framework: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> T:
        """The whole governed call: `fn(args)` runs only under a valid writ for these args."""
        permit = self.check(tool, args, operation=operation, framework=framework, metadata=metadata)
        return self.execute(permit, args, fn)

    async def arun(
        self,
        tool: str,
        args: Mapping[str, Any],
        fn: Callable[[dict[str, Any]], Awaitable[T]],
        *,
        operation: str | None = None,
        framework: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> T:
        """`run` for coroutines: `fn(args)` returns an awaitable."""
        permit = await self.acheck(
            tool, args, operation=operation, framework=framework, metadata=metadata
        )
        return await self.execute(permit, args, fn)

    def guard(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        operation: str | None = None,
    ) -> Any:
        """Decorator for a plain function (sync or async): its arguments become the action's."""
        if fn is None:
            return functools.partial(self.guard, name=name, operation=operation)
        tool = name or fn.__name__
        signature = inspect.signature(fn)

        def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def governed_async(*args: Any, **kwargs: Any) -> Any:
                return await self.arun(
                    tool, bind(args, kwargs), lambda a: fn(**a), operation=operation
                )

            return governed_async

        @functools.wraps(fn)
        def governed(*args: Any, **kwargs: Any) -> Any:
            return self.run(tool, bind(args, kwargs), lambda a: fn(**a), operation=operation)

        return governed


def governor_from(
    governor: Governor | None, agent_id: str | None, framework: str, options: Mapping[str, Any]
) -> Governor:
    """What every adapter's `wrap_*` does with its arguments: reuse or build a Governor."""
    if governor is not None:
        if options:
            raise TypeError(f"pass either governor= or client options, not both: {sorted(options)}")
        return governor
    return Governor(agent=agent_id, framework=framework, **options)
