"""CrewAI: governed tools in a real Crew (Agent + Task), driven by a scripted model.

Both of CrewAI's agent loops are exercised: native function calling and the text
(ReAct) loop. Assertions are on what the tools actually did (side effects), what
the agent was told, and what kubewrit recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from crewai import Agent, Crew, CrewOutput, Task
from crewai.tools import BaseTool, tool
from crewai.utilities.agent_utils import convert_tools_to_openai_schema
from integration_harness import AGENT, Approvals, KubewritServer, SideEffects, Unique
from kubewrit.webhook import canonical
from kubewrit.webhook.client import ActionDenied
from kubewrit.webhook.integrations.crewai import GovernedTool, governed, wrap_tools
from scripted_crewai import FINAL, ScriptedLLM

LOOPS = [pytest.param(True, id="native"), pytest.param(False, id="text")]


def support_tools(effects: SideEffects) -> list[BaseTool]:
    @tool
    def process_refund(order_id: str, amount: float) -> str:
        """Refund an order. Amount in dollars."""
        effects.record("process_refund", order_id=order_id, amount=amount)
        return f"refunded ${amount} on {order_id}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email to a customer."""
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    return [process_refund, send_email]


def kickoff(
    tools: list[BaseTool], script: list[list[dict[str, Any]]], native: bool = True
) -> tuple[ScriptedLLM, CrewOutput]:
    """Run a one-agent, one-task crew whose model makes the scripted tool calls."""
    llm = ScriptedLLM(script, native=native)
    agent = Agent(
        role="support",
        goal="Resolve the customer's request",
        backstory="A support agent.",
        llm=llm,
        tools=tools,
        max_iter=len(script) + 2,
        allow_delegation=False,
    )
    task = Task(
        description="Handle the refund request.", expected_output="What was done.", agent=agent
    )
    output = Crew(agents=[agent], tasks=[task]).kickoff()
    assert output.raw == FINAL
    return llm, output


def call(name: str, **args: Any) -> list[dict[str, Any]]:
    return [{"name": name, "args": args}]


def decisions_for(server: KubewritServer, tool_name: str, **args: Any) -> list[dict[str, Any]]:
    """kubewrit's decision records for exactly this action."""
    digest = canonical.action_hash(canonical.build_action(AGENT, tool_name, args, None))
    return [
        r
        for r in server.records(tool=tool_name)
        if r["action_hash"] == digest and r["kind"] == "decision"
    ]


@pytest.fixture
def tools(kubewrit_server: KubewritServer, effects: SideEffects) -> list[GovernedTool]:
    governor = kubewrit_server.governor()
    yield wrap_tools(support_tools(effects), governor=governor)
    governor.close()


def test_model_sees_the_same_tools(effects: SideEffects, tools: list[GovernedTool]) -> None:
    originals = support_tools(effects)
    for original, wrapped in zip(originals, tools, strict=True):
        assert (wrapped.name, wrapped.description) == (original.name, original.description)
        assert wrapped.args_schema is wrapped.inner.args_schema
        assert wrapped.args_schema.model_json_schema() == original.args_schema.model_json_schema()
        assert wrapped.formatted_description == original.formatted_description
    schemas = [convert_tools_to_openai_schema(t)[0] for t in (tools, originals)]
    assert schemas[0] == schemas[1]


@pytest.mark.parametrize("native", LOOPS)
def test_permit_and_deny(
    kubewrit_server: KubewritServer,
    tools: list[GovernedTool],
    effects: SideEffects,
    order_id: Unique,
    native: bool,
) -> None:
    oid = order_id()
    llm, output = kickoff(
        tools,
        [
            call("process_refund", order_id=oid, amount=25),
            call("process_refund", order_id=oid, amount=2500),
            call("send_email", to="c@x.io", body=f"re {oid}"),
        ],
        native,
    )
    # Permitted calls ran once each, with exactly the model's arguments; the denied one never.
    assert effects.calls == [
        ("process_refund", {"order_id": oid, "amount": 25}),
        ("send_email", {"to": "c@x.io", "body": f"re {oid}"}),
    ]
    ok, denied, sent = llm.tool_results()
    assert ok == f"refunded $25.0 on {oid}" and sent == "sent to c@x.io"
    assert "denied by policy and did not run" in denied and "finance team" in denied
    assert "rule support-agent/large-refunds" in denied and "record standalone-" in denied
    [failure] = output.tasks_output[0].tool_failures
    assert failure.tool_name == "process_refund"
    assert failure.failure.details["code"] == "rule_deny"
    # One decision per call: a refusal is a result, so CrewAI does not retry it.
    [decision] = decisions_for(kubewrit_server, "process_refund", order_id=oid, amount=2500)
    assert decision["decision"] == "DENY"


@pytest.mark.parametrize("native", LOOPS)
def test_defer(
    tools: list[GovernedTool],
    effects: SideEffects,
    approver: Approvals,
    order_id: Unique,
    native: bool,
) -> None:
    yes, no = order_id(), order_id()
    approver.decide_next(approve=True)
    llm, _ = kickoff(tools, [call("process_refund", order_id=yes, amount=270)], native)
    approver.join()
    assert llm.tool_results() == [f"refunded $270.0 on {yes}"]
    approver.decide_next(approve=False)
    llm, output = kickoff(tools, [call("process_refund", order_id=no, amount=270)], native)
    [refused] = llm.tool_results()
    assert "approval_denied" in refused and "did not run" in refused
    assert output.tasks_output[0].tool_failures[0].failure.details["approval"].startswith("apr-")
    assert effects.calls == [("process_refund", {"order_id": yes, "amount": 270})]


def test_approval_timeout_and_server_down(
    kubewrit_server: KubewritServer, effects: SideEffects, down_url: str, order_id: Unique
) -> None:
    slow = wrap_tools(
        support_tools(effects), governor=kubewrit_server.governor(approval_timeout=0.3)
    )
    llm, _ = kickoff(slow, [call("process_refund", order_id=order_id(), amount=270)])
    [late] = llm.tool_results()
    assert "not given in time" in late
    down = wrap_tools(
        support_tools(effects),
        agent_id=AGENT,
        url=down_url,
        token=kubewrit_server.agent_token,
        retries=0,
    )
    llm, output = kickoff(down, [call("send_email", to="a@x.io", body="b")], native=False)
    [unavailable] = llm.tool_results()
    assert "authorization service gave no usable answer" in unavailable
    assert output.tasks_output[0].tool_failures[0].failure.retryable
    assert effects.calls == []


def test_direct_calls_are_governed(
    kubewrit_server: KubewritServer, effects: SideEffects, order_id: Unique
) -> None:
    """run() with keywords or positionally, arun(), and on_deny="raise"."""
    refund, _ = wrap_tools(support_tools(effects), governor=kubewrit_server.governor())
    a, b = order_id(), order_id()
    assert refund.run(order_id=a, amount=10) == f"refunded $10.0 on {a}"
    assert refund.run(b, 2000).details["code"] == "rule_deny"

    @tool
    async def send_email(to: str, body: str) -> str:
        """Send an email to a customer."""
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    [email] = wrap_tools([send_email], governor=kubewrit_server.governor())
    assert asyncio.run(email.arun(to="x@x.io", body=a)) == "sent to x@x.io"
    strict = governed(governor=kubewrit_server.governor(), on_deny="raise")(
        support_tools(effects)[0]
    )
    with pytest.raises(ActionDenied):
        strict.run(order_id=order_id(), amount=5000)
    assert effects.calls == [
        ("process_refund", {"order_id": a, "amount": 10}),
        ("send_email", {"to": "x@x.io", "body": a}),
    ]


def test_async_crew_with_parallel_calls(
    tools: list[GovernedTool], effects: SideEffects, order_id: Unique
) -> None:
    """`akickoff`, with one model turn asking for several tools at once."""
    oid = order_id()
    llm = ScriptedLLM(
        [
            [
                {"name": "process_refund", "args": {"order_id": oid, "amount": 40}},
                {"name": "process_refund", "args": {"order_id": oid, "amount": 4000}},
                {"name": "send_email", "args": {"to": "p@x.io", "body": oid}},
            ]
        ]
    )
    agent = Agent(role="support", goal="Help", backstory="A support agent.", llm=llm, tools=tools)
    task = Task(description="Handle it.", expected_output="What was done.", agent=agent)
    output = asyncio.run(Crew(agents=[agent], tasks=[task]).akickoff())
    assert output.raw == FINAL
    assert sorted(effects.calls, key=str) == [
        ("process_refund", {"order_id": oid, "amount": 40}),
        ("send_email", {"to": "p@x.io", "body": oid}),
    ]
    results = llm.tool_results()
    assert len(results) == 3 and sum("denied by policy" in r for r in results) == 1
