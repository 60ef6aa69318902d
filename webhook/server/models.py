"""The wire format of the decision API: typed requests, typed answers, errors as data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Context(Strict):
    session: str | None = Field(default=None, max_length=256)
    framework: str | None = Field(default=None, max_length=64)
    namespace: str | None = Field(default=None, max_length=253)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DecideRequest(Strict):
    """One tool call. `agent` is optional and, if present, must match the caller's identity."""

    tool: str = Field(min_length=1, max_length=256, examples=["process_refund"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"amount": 45, "order_id": "A-1"}])
    operation: str | None = Field(default=None, max_length=128)
    agent: str | None = Field(default=None, max_length=253)
    context: Context | None = None
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Idempotency key: a retry with the same id gets the same decision.",
    )


class RecordRef(BaseModel):
    chain: str
    seq: int
    hash: str


class ApprovalRef(BaseModel):
    id: str
    phase: str
    expires_at: float
    poll: str = Field(description="GET this URL with ?wait=SECONDS to long-poll the outcome")


class MonitoredVerdict(BaseModel):
    decision: str
    reason: str
    rule_id: str


class LimitEntryView(BaseModel):
    """What the decision drew from (or found exceeded in) one limit; the record says the same."""

    limit: str
    scope: str = Field(description="The bucket: the agent, and per tool/session/argument if set")
    amount: str
    used: str = Field(description="Counted in the window before this decision")
    bound: str
    window: int = Field(description="Seconds")
    effect: Literal["require_approval", "deny"]
    exceeded: bool = False


class LimitUsageView(BaseModel):
    limit: str
    scope: str
    used: str
    bound: str
    window: int
    effect: str


class DecisionResponse(BaseModel):
    decision: Literal["PERMIT", "DEFER", "DENY"]
    reason: str
    message: str = ""
    rule_id: str
    risk: str
    risk_rule: str | None = None
    policy: str | None = None
    policy_hash: str
    action_hash: str
    record: RecordRef | None = None
    writ: str | None = None
    approval: ApprovalRef | None = None
    monitored: MonitoredVerdict | None = None
    replayed: bool = False
    limits: list[LimitEntryView] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
    decision: DecisionResponse | None = None


class ApproverView(BaseModel):
    """The approvers one policy that held the action names (empty lists: any approver)."""

    policy: str
    users: list[str]
    groups: list[str]


class ApprovalView(BaseModel):
    id: str
    phase: str
    agent: str
    tool: str
    action_hash: str
    action: dict[str, Any]
    rule: str
    risk: str
    reason: str
    message: str
    created_at: float
    expires_at: float
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str | None = None
    outcome: DecisionResponse | None = None
    namespace: str | None = None
    approvers: list[ApproverView] | None = Field(
        default=None,
        description="Who may decide it, bound when the action was held: every entry must admit "
        "the approver.",
    )


class ApprovalDecision(Strict):
    reason: str | None = Field(default=None, max_length=1024)


class RecordPage(BaseModel):
    items: list[dict[str, Any]]
    next_after: int | None = None


class AdmissionRequestBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    uid: str = Field(max_length=128)
    object: dict[str, Any]


class AdmissionReview(BaseModel):
    model_config = ConfigDict(extra="allow")
    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequestBody
