"""The decision workflow itself, over the in-memory backend: decide, hold, approve, deny,
expire, collect, replay, and the races between them. Milliseconds each."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from kubewrit.webhook import authority, chain, keys, policy, writ
from kubewrit.webhook.authority import ActionInput, Authority
from kubewrit.webhook.chain import Draft, Record
from kubewrit.webhook.decision import Decision, Phase, Reason
from kubewrit.webhook.errors import Conflict, Forbidden, NotFound, Unavailable
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.store.memory import MemoryStore

REPO = Path(__file__).resolve().parents[2]
WALKTHROUGH = REPO / "examples" / "policies" / "support-agent.yaml"

AGENT = Principal("support-agent", Role.AGENT)
MANAGER = Principal("manager", Role.APPROVER)
OUTSIDER = Principal("intern", Role.APPROVER)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Gate:
    """A record writer that holds records of one kind until released: to stage races."""

    def __init__(self, store: MemoryStore, kind: str) -> None:
        self.store, self.kind = store, kind
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def record(self, draft: Draft) -> Record:
        if draft.kind == self.kind:
            self.entered.set()
            await self.release.wait()
        return await self.store.record(draft)


class World:
    def __init__(self, writ_ttl: int = 60, approval_ttl: float = 900) -> None:
        self.signer = keys.generate()
        self.store = MemoryStore(self.signer)
        self.policies: Sequence[policy.Policy] = policy.load_paths([WALKTHROUGH])
        self.clock = Clock()
        self.authority = Authority(
            lambda: self.policies,
            self.store.backend(),
            self.signer,
            writ_ttl,
            approval_ttl,
            self.clock,
        )
        self.workflow = self.authority.approvals

    async def decide(self, amount: float, request_id: str | None = None, **extra):
        return await self.authority.decide(
            AGENT,
            ActionInput(
                tool="process_refund",
                args={"amount": amount, "order_id": "A-1"},
                request_id=request_id,
                **extra,
            ),
        )

    def kinds(self) -> list[str]:
        return [r.kind for r in self.store.records if r.kind != "genesis"]


@pytest.fixture
def world() -> World:
    return World()


async def test_permit_carries_a_writ_bound_to_its_record(world: World) -> None:
    outcome = await world.decide(45)
    assert outcome.decision is Decision.PERMIT and outcome.record is not None
    claims = writ.verify(outcome.writ, world.signer.verifier, outcome.action_hash)
    assert claims.record_hash == outcome.record.hash


async def test_an_approval_is_approved_then_collected_once(world: World) -> None:
    held = await world.decide(340)
    assert held.decision is Decision.DEFER and held.approval is not None
    assert held.record is not None and held.record.approval == held.approval.id
    approved = await world.workflow.resolve(held.approval.id, MANAGER, True, "ok")
    assert approved.phase is Phase.APPROVED and approved.outcome["decision"] == "PERMIT"
    consumed, token = await world.workflow.collect(held.approval.id, AGENT)
    assert consumed.phase is Phase.CONSUMED and token
    writ.verify(token, world.signer.verifier, held.action_hash, agent="support-agent")
    with pytest.raises(Conflict) as again:
        await world.workflow.collect(held.approval.id, AGENT)
    assert again.value.code == "approval_consumed"
    assert world.kinds() == ["decision", "approval"]


async def test_an_approval_put_back_after_collection_never_yields_a_second_usable_writ(
    world: World,
) -> None:
    """Whoever can write the stored approval (its status, in Kubernetes) may put it back."""
    held = await world.decide(340)
    assert held.approval is not None
    approved = await world.workflow.resolve(held.approval.id, MANAGER, True)
    _, first = await world.workflow.collect(held.approval.id, AGENT)
    executor = writ.ReplayCache()
    assert first and writ.verify(first, world.signer.verifier, held.action_hash, replay=executor)
    world.store.approvals[held.approval.id] = approved  # the phase put back
    _, again = await world.workflow.collect(held.approval.id, AGENT)
    assert again == first  # the record's own writ: same jti, same expiry, already used
    with pytest.raises(writ.WritRejected):
        writ.verify(again, world.signer.verifier, held.action_hash, replay=executor)
    world.clock.now += 120  # past the writ's lifetime
    world.store.approvals[held.approval.id] = approved
    with pytest.raises(Conflict) as late:
        await world.workflow.collect(held.approval.id, AGENT)
    assert late.value.code == "writ_expired"


async def test_collecting_while_the_approval_is_being_recorded_waits_for_its_outcome() -> None:
    world = World()
    held = await world.decide(340)
    gate = Gate(world.store, "approval")
    world.workflow.recording.writer = gate
    approving = asyncio.create_task(world.workflow.resolve(held.approval.id, MANAGER, True))
    await gate.entered.wait()
    seen, token = await world.workflow.collect(held.approval.id, AGENT, wait=0)
    assert seen.phase is Phase.DECIDING and token is None  # not consumed without its outcome
    gate.release.set()
    assert (await approving).phase is Phase.APPROVED
    consumed, token = await world.workflow.collect(held.approval.id, AGENT)
    assert consumed.phase is Phase.CONSUMED and token


async def test_a_long_poll_returns_the_writ_once_the_human_approves(world: World) -> None:
    held = await world.decide(340)
    polling = asyncio.create_task(world.workflow.collect(held.approval.id, AGENT, wait=5))
    await asyncio.sleep(0.05)
    await world.workflow.resolve(held.approval.id, MANAGER, True)
    consumed, token = await asyncio.wait_for(polling, 5)
    assert consumed.phase is Phase.CONSUMED and token


async def test_two_approvers_racing_produce_one_decision(world: World) -> None:
    held = await world.decide(340)
    other = Principal("manager2", Role.APPROVER, ("kubewrit-approvers",))
    results = await asyncio.gather(
        world.workflow.resolve(held.approval.id, MANAGER, True),
        world.workflow.resolve(held.approval.id, other, False),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Conflict) for r in results) == 1
    assert len([k for k in world.kinds() if k in ("approval", "denial")]) == 1


async def test_approvers_are_bound_at_hold_time_and_survive_a_policy_rename(world: World) -> None:
    held = await world.decide(340)
    assert held.approval.approvers is not None
    assert [a.policy for a in held.approval.approvers] == ["support-agent"]
    assert "manager" in held.approval.approvers[0].users
    world.policies = [dataclasses.replace(world.policies[0], name="renamed")]
    with pytest.raises(Forbidden) as refused:
        await world.workflow.resolve(held.approval.id, OUTSIDER, True)
    assert refused.value.code == "not_listed_approver"
    world.policies = []
    with pytest.raises(Forbidden):
        await world.workflow.resolve(held.approval.id, OUTSIDER, True)
    assert (await world.workflow.resolve(held.approval.id, MANAGER, False)).phase is Phase.DENIED


async def test_agents_never_approve_and_never_their_own(world: World) -> None:
    held = await world.decide(340)
    with pytest.raises(Forbidden) as as_agent:
        await world.workflow.resolve(held.approval.id, AGENT, True)
    assert as_agent.value.code == "not_an_approver"
    same_name = Principal("support-agent", Role.APPROVER, ("kubewrit-approvers",))
    with pytest.raises(Forbidden) as own:
        await world.workflow.resolve(held.approval.id, same_name, True)
    assert own.value.code == "self_approval"


async def test_an_approval_collected_after_its_expiry_yields_no_writ(world: World) -> None:
    held = await world.decide(340)
    await world.workflow.resolve(held.approval.id, MANAGER, True)
    world.clock.now = held.approval.expires_at + 1
    late, token = await world.workflow.collect(held.approval.id, AGENT)
    assert late.phase is Phase.EXPIRED and token is None
    assert world.store.records[-1].reason == Reason.APPROVAL_EXPIRED.value


async def test_an_approval_collected_after_the_policy_now_denies_yields_no_writ(
    world: World,
) -> None:
    held = await world.decide(340)
    await world.workflow.resolve(held.approval.id, MANAGER, True)
    world.policies = policy.parse_text(
        "agents: [support-agent]\nrules:\n"
        "  - {id: stop, match: {tool: process_refund}, deny: true, reason: frozen}\n",
        "freeze.yaml",
    )
    revoked, token = await world.workflow.collect(held.approval.id, AGENT)
    assert revoked.phase is Phase.DENIED and token is None
    assert world.store.records[-1].decision == "DENY"


async def test_an_approval_that_cannot_be_recorded_is_denied(world: World) -> None:
    held = await world.decide(340)
    world.store.available = False
    with pytest.raises(Unavailable):
        await world.workflow.resolve(held.approval.id, MANAGER, True)
    assert world.store.get(held.approval.id).phase is Phase.DENIED


async def test_overdue_approvals_expire_with_a_record(world: World) -> None:
    held = await world.decide(340)
    world.clock.now = held.approval.expires_at
    assert await world.workflow.expire_overdue() == 1
    assert world.store.get(held.approval.id).phase is Phase.EXPIRED
    with pytest.raises(Conflict):
        await world.workflow.resolve(held.approval.id, MANAGER, True)


async def test_another_agent_cannot_see_or_collect_an_approval(world: World) -> None:
    held = await world.decide(340)
    await world.workflow.resolve(held.approval.id, MANAGER, True)
    for stranger in (
        Principal("other-agent", Role.AGENT),
        Principal("support-agent", Role.AGENT, namespace="team-b"),
    ):
        with pytest.raises(NotFound):
            await world.workflow.collect(held.approval.id, stranger)
        assert world.workflow.visible_to(stranger, None, 10) == []
    assert world.store.get(held.approval.id).phase is Phase.APPROVED


async def test_concurrent_duplicates_make_one_decision(world: World) -> None:
    outcomes = await asyncio.gather(*(world.decide(45, request_id="r-1") for _ in range(20)))
    assert world.kinds() == ["decision"]
    assert {o.record.hash for o in outcomes} == {world.store.records[-1].hash}
    assert len({o.writ for o in outcomes}) == 1  # one record, one writ: the same bytes


async def test_a_replayed_permit_returns_the_same_writ_never_a_new_one() -> None:
    world = World(writ_ttl=1)
    first = await world.decide(45, request_id="r-1")
    again = await world.decide(45, request_id="r-1")
    assert again.extra["replayed"] and again.writ == first.writ
    time.sleep(max(0.0, writ.claims_of(first.writ)["exp"] - time.time()) + 0.05)
    with pytest.raises(Conflict) as expired:
        await world.decide(45, request_id="r-1")
    assert expired.value.code == "writ_expired"
    assert world.kinds() == ["decision"]


async def test_a_request_id_reused_for_another_action_is_refused(world: World) -> None:
    await world.decide(45, request_id="r-1")
    with pytest.raises(Conflict) as reused:
        await world.decide(46, request_id="r-1")
    assert reused.value.code == "request_id_reused"


async def test_a_retry_that_finds_the_hold_before_its_approval_waits_for_it(
    world: World,
) -> None:
    """Another replica may find the DEFER's record while its decider is still storing the
    approval the record names: the retry answers with that approval, not without one."""
    first = await world.decide(340, request_id="r-1")
    assert first.approval is not None
    stored = world.store.approvals.pop(first.approval.id)  # the decider has not stored it yet

    async def decider_stores_it() -> None:
        await asyncio.sleep(0.1)
        world.store.approvals[stored.id] = stored

    again, _ = await asyncio.gather(world.decide(340, request_id="r-1"), decider_stores_it())
    assert again.extra["replayed"] and again.approval is not None
    assert again.approval.id == first.approval.id
    assert world.kinds() == ["decision"]


async def test_a_retry_whose_hold_never_got_its_approval_is_still_the_same_defer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decider died between the record and the approval: after waiting for it, the
    retry is the recorded DEFER (never a second decision), with no approval to poll."""
    first = await world.decide(340, request_id="r-1")
    assert first.approval is not None
    world.store.approvals.pop(first.approval.id)
    monkeypatch.setattr(authority, "APPROVAL_WAIT_SECONDS", 0.2)
    started = time.monotonic()
    again = await world.decide(340, request_id="r-1")
    assert time.monotonic() - started >= 0.2
    assert again.extra["replayed"] and again.decision is Decision.DEFER
    assert again.approval is None and again.record.hash == first.record.hash
    assert world.kinds() == ["decision"]


async def test_a_deferred_retry_returns_its_own_approval(world: World) -> None:
    first = await world.decide(340, request_id="r-1")
    second = await world.decide(340, request_id="r-2")
    assert first.approval.id != second.approval.id
    retried = await world.decide(340, request_id="r-1")
    assert retried.approval.id == first.approval.id
    assert retried.extra["replayed"]


async def test_request_ids_are_per_agent(world: World) -> None:
    await world.decide(45, request_id="r-1")
    other = Principal("other-agent", Role.AGENT)
    outcome = await world.authority.decide(
        other, ActionInput(tool="process_refund", args={"amount": 45}, request_id="r-1")
    )
    assert not outcome.extra.get("replayed")


async def test_an_unrecorded_decision_leaves_the_request_id_free(world: World) -> None:
    world.store.available = False
    failed = await world.decide(45, request_id="r-1")
    assert failed.decision is Decision.DENY and failed.verdict.reason is Reason.RECORD_UNAVAILABLE
    world.store.available = True
    assert (await world.decide(45, request_id="r-1")).decision is Decision.PERMIT


async def test_an_impersonating_body_is_recorded_and_refused(world: World) -> None:
    with pytest.raises(Forbidden) as refused:
        await world.decide(45, agent="finance-agent")
    assert refused.value.outcome is not None
    assert world.store.records[-1].reason == Reason.IDENTITY_MISMATCH.value


async def test_a_second_policy_holding_the_action_adds_a_requirement_never_an_approver(
    world: World,
) -> None:
    """A tie between two policies: the approver must satisfy both, so a namespace user who
    adds a policy naming themselves cannot approve the team's held actions."""
    rogue = policy.parse_text(
        "agents: [support-agent]\n"
        "rules: [{id: mine, match: {tool: process_refund}, require_approval: true}]\n"
        "approvers: {users: [mallory]}\n",
        "rogue.yaml",
    )
    world.policies = [*world.policies, *rogue]
    held = await world.decide(340)
    assert sorted(a.policy for a in held.approval.approvers) == ["rogue", "support-agent"]
    mallory = Principal("mallory", Role.APPROVER)
    with pytest.raises(Forbidden) as refused:
        await world.workflow.resolve(held.approval.id, mallory, True)
    assert "support-agent" in refused.value.message
    with pytest.raises(Forbidden):
        await world.workflow.resolve(held.approval.id, MANAGER, True)
    both = Principal("manager", Role.APPROVER)
    world.policies = world.policies[:1]  # removing the rogue policy later changes nothing bound
    with pytest.raises(Forbidden):
        await world.workflow.resolve(held.approval.id, both, True)


async def test_a_writ_is_issued_only_for_a_record_a_trusted_writer_signed(world: World) -> None:
    """Whoever can edit a stored approval (an ActionApproval's status) cannot mint a writ."""
    held = await world.decide(340)
    other = await world.decide(341)
    approved = await world.workflow.resolve(held.approval.id, MANAGER, True)
    await world.workflow.resolve(other.approval.id, MANAGER, True)
    genuine = approved.decided_record()
    forger = keys.generate()
    draft = Draft(**{f: getattr(genuine, f) for f in Draft.__dataclass_fields__})
    forged = chain.seal(
        dataclasses.replace(draft, action_hash="sha256:" + "0" * 64),
        genuine.chain,
        genuine.seq,
        genuine.prev,
        forger,
    )
    borrowed = world.store.get(other.approval.id).decided_record()
    for record in (forged, borrowed):
        summary = {**approved.outcome, "record": {"full": record.to_dict()}}
        world.store.approvals[held.approval.id] = approved.moved(Phase.APPROVED, outcome=summary)
        with pytest.raises(Forbidden) as refused:
            await world.workflow.collect(held.approval.id, AGENT)
        assert refused.value.code == "approval_not_genuine"
    world.store.approvals[held.approval.id] = approved
    consumed, token = await world.workflow.collect(held.approval.id, AGENT)
    assert consumed.phase is Phase.CONSUMED and token


async def test_only_approvals_kubewrit_opened_are_decided(world: World) -> None:
    held = await world.decide(340)
    genuine = world.store.get(held.approval.id)
    assert genuine.seal and genuine.uid
    hand_made = dataclasses.replace(genuine, id="apr-hand-made", uid="apr-hand-made")
    altered = dataclasses.replace(genuine, expires_at=genuine.expires_at + 3600)
    recreated = dataclasses.replace(genuine, uid="another-object")
    for forged in (hand_made, altered, recreated):
        world.store.approvals[forged.id] = forged
        with pytest.raises(Forbidden) as refused:
            await world.workflow.resolve(forged.id, MANAGER, True)
        assert refused.value.code == "approval_not_genuine"
    assert world.kinds() == ["decision"]


async def test_an_identity_that_could_not_be_confirmed_is_never_permitted(world: World) -> None:
    stale = dataclasses.replace(AGENT, verified=False)
    outcome = await world.authority.decide(
        stale, ActionInput(tool="process_refund", args={"amount": 45}, request_id="r-stale")
    )
    assert (outcome.decision, outcome.verdict.reason) == (
        Decision.DENY,
        Reason.IDENTITY_UNAVAILABLE,
    )
    assert outcome.writ is None and world.store.records[-1].agent == "support-agent"
    held = await world.decide(340)
    await world.workflow.resolve(held.approval.id, MANAGER, True)
    with pytest.raises(Unavailable):
        await world.workflow.collect(held.approval.id, stale)
    assert world.store.get(held.approval.id).phase is Phase.APPROVED


async def test_a_request_id_that_cannot_be_reserved_is_deny_record_unavailable(
    world: World,
) -> None:
    async def down(key: object, action_hash: str) -> None:
        raise Unavailable("request_store_unavailable", "the API server is down")

    world.authority.requests.store.claim = down  # type: ignore[method-assign]
    outcome = await world.decide(45, request_id="r-down")
    assert (outcome.decision, outcome.verdict.reason) == (
        Decision.DENY,
        Reason.RECORD_UNAVAILABLE,
    )
    assert outcome.record is None and outcome.writ is None and world.kinds() == []
