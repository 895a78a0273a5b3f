"""The HTTP API's request and response bodies (they are what /docs and /openapi.json describe).

Requests are strict: unknown fields and wrong types (``"0.5"`` for a number, a string for a
list) are rejected with 422, naming the field. A chain comes either as ``steps`` (a list of
step texts, plus an optional ``answer``) or as ``chain`` (the chain text: one step per line,
then an optional ``#### answer`` line).

Indices follow verinet's convention: steps from 0; the answer line is verified as one more
item at index ``len(steps)``; ``earliest_error`` is the first item whose posterior P(valid) is
below the threshold, or -1.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verinet.schema import FORMAT_VERSION
from verinet.serve.config import Aggregation, Topology

ChainFormat = Literal["text", "arith", "logic", "gsm8k"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class VerifyRequest(_Request):
    """One chain to verify."""

    id: str | None = Field(default=None, min_length=1, max_length=200,
                           description="your id for this chain, echoed back (default: generated)")
    question: str = Field(min_length=1, description="the question the chain answers")
    steps: list[str] | None = Field(default=None, description="the chain's steps, in order")
    chain: str | None = Field(default=None, description="the chain as text instead of `steps`: one step per "
                              "line, then an optional '#### <answer>' line")
    answer: str | None = Field(default=None,
                               description="the chain's final answer (verified as one more item)")
    format: ChainFormat = Field(
        default="text", description="text: free-text steps, each read as depending on the one before; "
        "arith, logic, gsm8k: the task family's format, whose reader gives the real premises and whose "
        "exact checker is reported too")
    topology: Topology | None = Field(default=None, description="which members verify: all_pairs (every "
                                      "member), ring (one), k_random (k); default from the server config")
    k: int | None = Field(default=None, ge=1, description="verifiers for topology k_random")
    aggregation: Aggregation | None = Field(default=None, description="how verdicts become a posterior")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0,
                                    description="P(valid) below this is an error")
    include_graph: bool = Field(default=True, description="return the verification graph as node-link JSON")
    timeout_s: float | None = Field(default=None, gt=0.0, description="give up after this many seconds "
                                    "(504); at most the server's timeout")

    @model_validator(mode="after")
    def _one_chain(self) -> VerifyRequest:
        if (self.steps is None) == (self.chain is None):
            raise ValueError("give the chain exactly once: either `steps` (a list) or `chain` (text)")
        return self


class BatchRequest(_Request):
    """Several chains, verified together (one call per member for the whole batch)."""

    items: list[VerifyRequest] = Field(min_length=1, description="the chains")
    timeout_s: float | None = Field(default=None, gt=0.0,
                                    description="for the whole batch; at most the server's")


class StepResult(BaseModel):
    index: int = Field(description="position in the chain; the answer line is len(steps)")
    kind: Literal["step", "answer"]
    text: str
    p_valid: float = Field(description="posterior P(valid) after aggregation")
    p_supported: float = Field(description="P(valid and every premise supported)")
    verdict: Literal["valid", "invalid"] = Field(description="p_valid against the threshold")
    premises: list[int] = Field(default_factory=list, description="earlier steps this step uses")
    scores: dict[str, float] = Field(description="member -> its P(valid) for this item")


class PairAgreement(BaseModel):
    a: str
    b: str
    agreement: float | None = Field(description="share of shared items with the same binary verdict")
    n_items: int


class Agreement(BaseModel):
    n_verifiers: int
    n_items: int = Field(description="items rated by at least 2 verifiers")
    pairwise: float | None = Field(description="share of agreeing verifier pairs, pooled over items")
    fleiss_kappa: float | None = Field(description="None when undefined (e.g. every verdict the same)")
    krippendorff_alpha: float | None
    pairs: list[PairAgreement]
    consensus: dict[str, float | None] = Field(description="member -> share of its verdicts equal to the "
                                               "majority of the other verifiers")


class MemberReport(BaseModel):
    name: str
    model: str
    version: str = Field(description="fingerprint of the member's weights (or the served model id)")
    answered: bool
    seconds: float | None = Field(description="from the call to its answer (or to giving up)")
    error: str | None = None
    replica: str | None = None


class CheckerReport(BaseModel):
    """The task family's exact checker on the chain (format arith, logic or gsm8k)."""

    family: str
    first_error: int
    valid: list[bool] = Field(description="per item, steps then the answer line")
    reasons: list[str | None]


class VerifyResponse(BaseModel):
    format_version: int = FORMAT_VERSION
    id: str
    steps: list[StepResult] = Field(description="every step, then the answer line when there is one")
    earliest_error: int = Field(description="first item below the threshold; -1: none")
    answer: str | None = Field(description="the chain's answer, as given")
    supported_answer: str | None = Field(description="the answer, when the chain is accepted (its items are "
                                         "supported); else None")
    accepted: bool
    agreement: Agreement
    topology: str
    aggregation: str
    threshold: float
    verifiers: list[str] = Field(description="members assigned to verify this chain")
    missing: list[str] = Field(description="assigned members that did not answer (the quorum did)")
    members: list[MemberReport]
    checker: CheckerReport | None = None
    graph: dict[str, Any] | None = Field(default=None, description="node-link JSON (networkx)")
    timings_s: dict[str, float]


class BatchResponse(BaseModel):
    format_version: int = FORMAT_VERSION
    results: list[VerifyResponse]
    timings_s: dict[str, float]


class ModelInfo(BaseModel):
    name: str
    backend: str
    model: str
    format: str
    version: str
    ready: bool
    info: dict[str, Any] = Field(default_factory=dict, description="what the backend says about itself")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    quorum: int
    topologies: list[str]
    aggregations: list[str]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_json, validation_error, too_many_steps")
    message: str
    field: str | None = None
    limit: float | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    status: str
    members_ready: int | None = None
    quorum: int | None = None


__all__ = ["Agreement", "BatchRequest", "BatchResponse", "ChainFormat", "CheckerReport", "ErrorBody",
           "ErrorDetail", "MemberReport", "ModelInfo", "ModelsResponse", "PairAgreement", "Status",
           "StepResult", "VerifyRequest", "VerifyResponse"]
