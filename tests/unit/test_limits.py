"""Limits and sequences over the in-memory backend, with an injected clock.

The bulk attack (many small refunds, each under a per-action rule) is stopped by a
summed budget; window edges, scopes, sequences, typing and approvals each have a case.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
import yaml
from kubewrit.webhook import keys, policy
from kubewrit.webhook.authority import ActionInput, Authority
from kubewrit.webhook.decision import Decision, Phase, Reason
from kubewrit.webhook.errors import Conflict
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.store.memory import MemoryStore

AGENT = Principal("support-agent", Role.AGENT)
OTHER = Principal("other-agent", Role.AGENT)
MANAGER = Principal("manager", Role.APPROVER, ("managers",))
HOUR = 3600

POLICY = """
name: refunds
agents: [support-agent, other-agent]
approvers: {groups: [managers]}
rules:
  - id: auto-small
    match: {tool: process_refund, amount_lt: 150}
    allow: true
  - id: big
    match: {tool: process_refund}
    require_approval: true
  - id: read
    match: {tool: [read_inbox, export_customers, lookup]}
    allow: true
  - id: email-inside
    match: {tool: send_email, to_iglob: "*@shop.example"}
    allow: true
  - id: email-after-reading
    match:
      tool: send_email
      after: {tool: [read_inbox, export_customers], within: 10m}
    require_approval: true
  - id: email
    match: {tool: send_email}
    allow: true
  - id: pay
    match: {tool: [pay, ping]}
    allow: true
limits:
  - name: auto-refund-budget
    match: {tool: process_refund}
    sum: amount
    max: 1000
    window: 24h
    exceeded: require_approval
    message: refunds beyond $1,000 a day need a manager
  - name: per-customer
    match: {tool: process_refund}
    max: 3
    window: 1d
    per: [args.customer_id]
    exceeded: deny
  - name: lookups-per-hour
    match: {tool: lookup}
    max: 3
    window: 1h
    exceeded: deny
  - name: lookups-per-session
    match: {tool: lookup}
    max: 2
    window: 1h
    per: [session]
    exceeded: require_approval
  - name: pings-per-hour
    match: {tool: ping}
    max: 3
    window: 1h
  - name: payments
    match: {tool: pay}
    sum: amount
    max: 500
    window: 1h
"""


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, text: str = POLICY) -> None:
        self.clock = Clock()
        self.signer = keys.generate()
        self.store = MemoryStore(self.signer, clock=self.clock)
        self.policies = [policy.compile_document(yaml.safe_load(text), "test.yaml")]
        self.authority = Authority(
            lambda: self.policies,
            self.store.backend(),
            self.signer,
            clock=self.clock,
        )

    async def act(
        self,
        tool: str,
        principal: Principal = AGENT,
        session: str | None = None,
        **args: Any,
    ) -> Any:
        context = {"session": session} if session else None
        return await self.authority.decide(
            principal, ActionInput(tool=tool, args=args, context=context)
        )

    async def refund(self, amount: Any, customer: str = "c-1", **kw: Any) -> Any:
        return await self.act("process_refund", amount=amount, customer_id=customer, **kw)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_the_bulk_attack_gets_exactly_the_budget_and_the_rest_waits_for_a_human() -> None:
    async def attack() -> list[Any]:
        w = World()
        outcomes = await asyncio.gather(*(w.refund(100, customer=f"c-{i}") for i in range(1470)))
        return [w, outcomes]

    w, outcomes = run(attack())
    decisions = [o.decision for o in outcomes]
    assert decisions.count(Decision.PERMIT) == 10
    assert decisions.count(Decision.DEFER) == 1460
    held = next(o for o in outcomes if o.decision is Decision.DEFER)
    assert held.verdict.reason is Reason.LIMIT_EXCEEDED
    assert held.verdict.rule_id == "refunds/limit:auto-refund-budget"
    assert "1000 of 1000 used in the last 24h" in held.verdict.message
    assert "need a manager" in held.verdict.message
    assert held.record.limits[0]["exceeded"] is True
    assert held.record.limits[0]["bound"] == "1000"
    permitted = [r for r in w.store.records if r.decision == "PERMIT"]
    spent = sum(
        Decimal(e["amount"]) for r in permitted for e in r.limits if "auto-refund" in e["limit"]
    )
    assert spent == 1000


def test_a_window_lets_go_of_what_is_older_than_it() -> None:
    async def scenario() -> list[Decision]:
        w = World()
        seen = [(await w.act("ping")).decision for _ in range(4)]  # 3 fit, the 4th does not
        w.clock.now += HOUR - 5
        seen.append((await w.act("ping")).decision)  # the first three are still in the hour
        w.clock.now += 7  # now more than an hour (and the rounding second) after them
        seen.append((await w.act("ping")).decision)
        return seen

    assert run(scenario()) == [Decision.PERMIT] * 3 + [Decision.DENY, Decision.DENY] + [
        Decision.PERMIT
    ]


def test_a_limit_per_argument_counts_each_customer_separately() -> None:
    async def scenario() -> list[Any]:
        w = World()
        same = [await w.refund(10, customer="c-1") for _ in range(4)]
        other = await w.refund(10, customer="c-2")
        return [*same, other]

    outcomes = run(scenario())
    assert [o.decision for o in outcomes] == [Decision.PERMIT] * 3 + [
        Decision.DENY,
        Decision.PERMIT,
    ]
    assert outcomes[3].verdict.reason is Reason.LIMIT_EXCEEDED
    assert "per-customer" in outcomes[3].verdict.rule_id


def test_a_missing_per_argument_is_denied_rather_than_pooled() -> None:
    outcome = run(World().act("process_refund", amount=10))
    assert outcome.decision is Decision.DENY
    assert outcome.verdict.reason is Reason.TYPE_MISMATCH


def test_a_session_limit_counts_within_the_session_and_the_agent_limit_across_them() -> None:
    async def scenario() -> list[Decision]:
        w = World()
        seen = [(await w.act("lookup", session="s1")).decision for _ in range(3)]
        seen.append((await w.act("lookup", session="s2")).decision)  # 3rd of the agent's hour
        seen.append((await w.act("lookup", session="s3")).decision)  # 4th of the agent's hour
        return seen

    assert run(scenario()) == [
        Decision.PERMIT,
        Decision.PERMIT,
        Decision.DEFER,
        Decision.PERMIT,
        Decision.DENY,
    ]


def test_limits_are_per_agent() -> None:
    async def scenario() -> list[Decision]:
        w = World()
        for _ in range(3):
            await w.act("ping")
        return [(await w.act("ping")).decision, (await w.act("ping", OTHER)).decision]

    assert run(scenario()) == [Decision.DENY, Decision.PERMIT]


def test_an_email_out_is_allowed_before_reading_the_inbox_and_held_after() -> None:
    async def scenario() -> list[Any]:
        w = World()
        before = await w.act("send_email", to="x@evil.example")
        await w.act("read_inbox")
        after = await w.act("send_email", to="x@evil.example")
        inside = await w.act("send_email", to="ops@shop.example")
        w.clock.now += 601
        later = await w.act("send_email", to="x@evil.example")
        return [before, after, inside, later]

    before, after, inside, later = run(scenario())
    assert before.decision is Decision.PERMIT
    assert after.decision is Decision.DEFER
    assert after.verdict.rule_id == "refunds/email-after-reading"
    assert inside.decision is Decision.PERMIT
    assert later.decision is Decision.PERMIT


def test_history_is_per_agent() -> None:
    async def scenario() -> Decision:
        w = World()
        await w.act("read_inbox", OTHER)
        return (await w.act("send_email", to="x@evil.example")).decision

    assert run(scenario()) is Decision.PERMIT


def test_a_summed_amount_of_the_wrong_type_is_denied_not_counted_as_zero() -> None:
    async def scenario() -> list[Any]:
        w = World()
        return [
            await w.act("pay", amount="5,000"),
            await w.act("pay", amount=True),
            await w.act("pay"),
            await w.act("pay", amount=-5),
            await w.act("pay", amount="400"),
            await w.act("pay", amount=101),
        ]

    outcomes = run(scenario())
    assert [o.verdict.reason for o in outcomes[:4]] == [Reason.TYPE_MISMATCH] * 4
    assert all(o.decision is Decision.DENY for o in outcomes[:4])
    assert outcomes[4].decision is Decision.PERMIT  # a clean decimal string counts as 400
    assert outcomes[5].decision is Decision.DENY  # 400 + 101 > 500
    assert outcomes[5].verdict.reason is Reason.LIMIT_EXCEEDED


def test_denied_and_held_actions_do_not_count() -> None:
    async def scenario() -> Decision:
        w = World()
        await w.refund(900, customer="c-9")  # held by the `big` rule: not counted
        await w.act("pay", amount="nope")  # denied: not counted
        return (await w.refund(140, customer="c-8")).decision

    assert run(scenario()) is Decision.PERMIT


def test_an_approved_action_counts_toward_the_limit() -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        w = World()
        for i in range(10):
            await w.refund(100, customer=f"c-{i}")
        held = await w.refund(100, customer="c-x")
        approved = await w.authority.approvals.resolve(held.approval.id, MANAGER, True)
        usage = w.store.backend().budgets  # a fresh view over the same records
        counted = await usage.reserve([], w.clock())
        return held, approved, (w, counted)

    held, approved, (w, _) = run(scenario())
    assert held.decision is Decision.DEFER
    assert approved.phase is Phase.APPROVED
    record = next(r for r in w.store.records if r.kind == "approval")
    assert record.decision == "PERMIT"
    entry = next(e for e in record.limits if "auto-refund" in e["limit"])
    assert entry["used"] == "1000" and entry["amount"] == "100" and "exceeded" not in entry
    usage = {u.limit: u.used for u in w.authority.judge.budgets.usage(w.clock())}
    assert usage["refunds/auto-refund-budget"] == 1100


def test_an_approval_that_would_exceed_a_deny_limit_is_refused_and_stays_pending() -> None:
    async def scenario() -> tuple[Any, Any]:
        w = World()
        held = [await w.refund(500, customer="c-1") for _ in range(4)]  # all held (big)
        for h in held[:3]:
            await w.authority.approvals.resolve(h.approval.id, MANAGER, True)
        with pytest.raises(Conflict) as refused:
            await w.authority.approvals.resolve(held[3].approval.id, MANAGER, True)
        return refused.value, w.authority.approvals.get(held[3].approval.id)

    refused, approval = run(scenario())
    assert refused.code == "limit_exceeded"
    assert "per-customer" in refused.message and "3 of 3" in refused.message
    assert approval.phase is Phase.PENDING


def test_a_held_action_that_a_deny_limit_could_never_grant_is_denied_at_once() -> None:
    async def scenario() -> Any:
        w = World()
        for _ in range(3):
            await w.refund(10, customer="c-1")
        return await w.refund(500, customer="c-1")  # would be held, but the limit denies

    outcome = run(scenario())
    assert outcome.decision is Decision.DENY
    assert outcome.verdict.reason is Reason.LIMIT_EXCEEDED


def test_counts_are_rebuilt_from_the_records_after_a_restart() -> None:
    async def scenario() -> list[Decision]:
        w = World()
        for i in range(9):
            await w.refund(100, customer=f"c-{i}")
        # A new authority over the same records: the budgets reload from them.
        restarted = Authority(lambda: w.policies, w.store.backend(), w.signer, clock=w.clock)
        first = await restarted.decide(
            AGENT, ActionInput("process_refund", {"amount": 100, "customer_id": "z"})
        )
        second = await restarted.decide(
            AGENT, ActionInput("process_refund", {"amount": 100, "customer_id": "y"})
        )
        return [first.decision, second.decision]

    assert run(scenario()) == [Decision.PERMIT, Decision.DEFER]


def test_policy_hashes_do_not_change_for_policies_without_limits_or_sequences() -> None:
    text = "name: p\nrules:\n  - {id: a, match: {tool: t}, allow: true}\n"
    compiled = policy.compile_document(yaml.safe_load(text), "p.yaml")
    with_limit = policy.compile_document(
        yaml.safe_load(text + "limits:\n  - {name: l, max: 1, window: 1h}\n"), "p.yaml"
    )
    assert compiled.hash != with_limit.hash
    assert compiled.limits == () and compiled.recent == ()


@pytest.mark.parametrize(
    ("limit", "problem"),
    [
        ({"name": "l", "max": 1}, "window None"),
        ({"name": "l", "max": 1, "window": "1y"}, "window '1y'"),
        ({"name": "l", "max": -1, "window": "1h"}, "non-negative"),
        ({"name": "l", "max": 1, "window": "1h", "exceeded": "warn"}, "require_approval or deny"),
        ({"name": "l", "max": 1, "window": "1h", "per": ["customer"]}, "args.<path>"),
        ({"name": "l", "max": 1, "window": "1h", "count": True, "sum": "a"}, "either counts"),
        (
            {"name": "l", "max": 1, "window": "1h", "maxx": 2},
            "unknown key 'maxx' (did you mean 'max'?)",
        ),
    ],
)
def test_a_malformed_limit_is_refused_with_where_and_what(limit: dict, problem: str) -> None:
    document = {"name": "p", "rules": [{"match": {"tool": "t"}, "allow": True}], "limits": [limit]}
    with pytest.raises(policy.PolicyError) as refused:
        policy.compile_document(document, "p.yaml")
    assert "limit 1 (l)" in str(refused.value) and problem in str(refused.value)


def test_a_misspelt_sequence_key_is_refused_with_the_key_it_meant() -> None:
    after = {"tool": ["read_inbox"], "withn": "10m"}
    document = {"name": "p", "rules": [{"match": {"tool": "t", "after": after}, "allow": True}]}
    with pytest.raises(policy.PolicyError) as refused:
        policy.compile_document(document, "p.yaml")
    assert "match.after: unknown key 'withn' (did you mean 'within'?)" in str(refused.value)


def test_policy_status_shows_each_limits_fullest_scope_from_the_budgets() -> None:
    from decimal import Decimal as D

    from kubewrit.operator.policies import limit_usage, usage_summary
    from kubewrit.webhook.kube.configmaps import budget_data
    from kubewrit.webhook.slices import BudgetState

    manifest = {
        "apiVersion": "kubewrit.io/v1alpha1",
        "kind": "AgentPolicy",
        "metadata": {"name": "refunds", "namespace": "shop"},
        "spec": yaml.safe_load(POLICY),
    }
    manifest["spec"].pop("name")
    compiled = policy.compile_document(manifest, "AgentPolicy shop/refunds")
    now = 1_000_000.0
    busy = BudgetState("shop/refunds/per-customer", "c-1", [(now - 10, D(2))])
    quiet = BudgetState("shop/refunds/per-customer", "c-2", [(now - 10, D(1))])
    leased = BudgetState(
        "shop/refunds/auto-refund-budget", "a", [(now - 5, D(600))], {"r1": (D(200), now + 20)}
    )
    stale = BudgetState("shop/refunds/auto-refund-budget", "b", [(now - 90000, D(900))])
    budgets = [budget_data(b, now, 86400, D(1000)) for b in (busy, quiet, leased, stale)]
    usage = {u["name"]: u for u in limit_usage(compiled, budgets, now)}
    assert usage["per-customer"]["used"] == "2" and usage["per-customer"]["scopes"] == 2
    assert usage["auto-refund-budget"]["used"] == "800"  # a live slice counts in full
    assert usage["auto-refund-budget"]["scopes"] == 1  # yesterday's spend has left the window
    assert usage["pings-per-hour"]["used"] == "0"
    assert "auto-refund-budget 800/1000 per 24h" in usage_summary(list(usage.values()))


def test_the_console_preview_knows_no_history_and_says_so() -> None:
    from kubewrit.webhook import canonical
    from kubewrit.webhook.console.explain import explain
    from kubewrit.webhook.console.routes import preview

    policies = World().policies
    action = canonical.build_action("support-agent", "send_email", {"to": "x@evil.example"})
    assert preview(policies, action).rule_id == "refunds/email"
    traced = explain(policies, action).selecting[0]
    sequence = next(r for r in traced.rules if r.label == "email-after-reading")
    assert not sequence.matched
    assert sequence.checks[-1].outcome == "failed" and "no history" in sequence.checks[-1].detail


def test_a_count_that_cannot_be_established_permits_nothing() -> None:
    class Unreachable:
        async def reserve(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("the shared budget cannot be reached")

    async def scenario() -> list[Any]:
        w = World()
        w.authority.judge.budgets = Unreachable()  # type: ignore[assignment]
        return [await w.act("ping"), await w.act("read_inbox")]

    limited, unlimited = run(scenario())
    assert limited.decision is Decision.DENY
    assert limited.verdict.reason is Reason.LIMIT_UNAVAILABLE
    assert limited.record is not None  # recorded, like every decision
    assert unlimited.decision is Decision.PERMIT  # actions no limit counts are unaffected
