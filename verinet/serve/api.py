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

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from verinet.schema import FORMAT_VERSION
from verinet.serve.config import Aggregation, Topology

ChainFormat = Literal["text", "arith", "logic", "gsm8k"]

# What str.splitlines() splits on: inside a step or an answer any of these would make it two lines.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# JSON Schema for the rules a text field must follow (the server checks the same, in serve/chains.py).
# Whitespace is spelled out as the characters Python's str.strip() removes: JSON Schema's `\s` (ECMA-262)
# differs (it lacks U+001C-U+001F and U+0085, and has U+FEFF). No pattern ends in `$` where a trailing
# newline would change the answer (in Python's dialect `$` also matches before one).
_u = "".join
_LB_CLASS = _u(f"\\u{ord(c):04x}" for c in LINE_BREAKS)
_WS_CLASS = _u(f"\\u{i:04x}" for i in range(0x3001) if chr(i).isspace())
_HAS_TEXT = {"pattern": f"[^{_WS_CLASS}]"}
_ONE_LINE = {"not": {"pattern": f"[{_LB_CLASS}]"}}
_NOT_ANSWER_LINE = {"not": {"pattern": f"^[{_WS_CLASS}]*####"}}
# a chain text whose '####' answer line is blank
_NO_BLANK_ANSWER = {"not": {"pattern": f"(^|[{_LB_CLASS}])[{_WS_CLASS}]*####[{_WS_CLASS}]*($|[{_LB_CLASS}])"}}


def _integral(v: Any) -> Any:
    """JSON Schema's integer includes 4.0; Python's strict int does not. Integral floats become ints."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


JsonPositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
JsonSeed = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(_integral)]  # exact as a JSON double
Text = Annotated[str, Field(min_length=1, json_schema_extra=_HAS_TEXT)]
StepText = Annotated[str, Field(min_length=1, json_schema_extra={"allOf": [_HAS_TEXT, _ONE_LINE, _NOT_ANSWER_LINE]})]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_ARITH_EXAMPLE = {"question": "%10;c1;w7;f:w*c;k:w-f;?k", "format": "arith",
                  "steps": ["f:w*c>w7*c1>7;f7", "k:w-f>w7-f7>0;k0"], "answer": "0"}
_TEXT_EXAMPLE = {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
                 "chain": "He buys 4 more: 3 + 4 = 7.\n#### 7", "topology": "ring", "aggregation": "vote"}


class VerifyRequest(_Request):
    """One chain to verify."""

    id: str | None = Field(default=None, min_length=1, max_length=200,
                           description="your id for this chain, echoed back (default: generated)")
    question: Text = Field(description="the question the chain answers (not blank)")
    steps: list[StepText] | None = Field(
        default=None, min_length=1, description="the chain's steps, in order: at least one; each one line, not "
        "blank, not starting with '####' (that is the answer line: use `answer`)")
    chain: Annotated[str, Field(min_length=1, json_schema_extra={"allOf": [_HAS_TEXT, _NO_BLANK_ANSWER]})] | None = \
        Field(default=None, description="the chain as text instead of `steps`: one step per line, then an "
              "optional '#### <answer>' line (not blank)")
    answer: Annotated[str, Field(min_length=1, json_schema_extra={"allOf": [_HAS_TEXT, _ONE_LINE]})] | None = Field(
        default=None, description="the chain's final answer, one line (verified as one more item)")
    format: ChainFormat = Field(
        default="text", description="text: free-text steps, each read as depending on the one before; "
        "arith, logic, gsm8k: the task family's format, whose reader gives the real premises and whose "
        "exact checker is reported too (a question not in that family's format is a 422 bad_question)")
    topology: Topology | None = Field(default=None, description="which members verify: all_pairs (every "
                                      "member), ring (one), k_random (k); default from the server config")
    k: JsonPositiveInt | None = Field(default=None, description="verifiers for topology k_random (at most "
                              "the members: the client is not one)")
    seed: JsonSeed | None = Field(default=None, description="seed of the ring / k_random draw of verifiers; "
                                  "default: a fresh one per chain, returned in the response")
    aggregation: Aggregation | None = Field(default=None, description="how verdicts become a posterior")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0,
                                    description="P(valid) below this is an error")
    include_graph: bool = Field(default=True, description="return the verification graph as node-link JSON")
    timeout_s: float | None = Field(default=None, ge=1.0, le=86_400.0, description="give up after this many "
                                    "seconds (504), at least 1; at most the server's timeout")

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        # exactly one of `steps` and `chain` is given (not null)
        "oneOf": [{"required": ["steps"], "properties": {"steps": {"type": "array"}}},
                  {"required": ["chain"], "properties": {"chain": {"type": "string"}}}],
        # an answer given twice: in a '#### ...' line of the chain text and in `answer`
        "not": {"required": ["chain", "answer"], "properties": {
            "chain": {"type": "string", "pattern": f"(^|[{_LB_CLASS}])[{_WS_CLASS}]*####"},
            "answer": {"type": "string"}}},
        "examples": [_ARITH_EXAMPLE, _TEXT_EXAMPLE],
    })

    @model_validator(mode="after")
    def _one_chain(self) -> VerifyRequest:
        if (self.steps is None) == (self.chain is None):
            raise ValueError("give the chain exactly once: either `steps` (a list) or `chain` (text)")
        return self


class BatchRequest(_Request):
    """Several chains, verified together (one call per member for the whole batch)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"items": [{**_ARITH_EXAMPLE, "id": "a"}, {**_TEXT_EXAMPLE, "id": "b"}]}]})

    items: list[VerifyRequest] = Field(min_length=1, description="the chains (at least one)")
    timeout_s: float | None = Field(default=None, ge=1.0, le=86_400.0,
                                    description="for the whole batch, at least 1 s; at most the server's. An "
                                    "item's own timeout_s also bounds the batch (it is answered as one)")

    def limit_s(self) -> float | None:
        """The batch's time limit: the shortest of its own timeout_s and its items'."""
        given = [t for t in (self.timeout_s, *(r.timeout_s for r in self.items)) if t is not None]
        return min(given) if given else None


class StepResult(BaseModel):
    index: int = Field(description="position in the chain; the answer line is len(steps)")
    kind: Literal["step", "answer"]
    text: str
    p_valid: float = Field(description="posterior P(valid) after aggregation")
    p_supported: float = Field(description="P(valid and every premise supported)")
    verdict: Literal["valid", "invalid"] = Field(description="p_valid against the threshold")
    premises: list[int] = Field(default_factory=list, description="earlier steps this step uses")
    missing_premises: list[str] = Field(default_factory=list, description="quantities the step uses that "
                                        "neither the question nor an earlier step states (the step is then "
                                        "unsupported, p_supported 0)")
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


class ReliabilityInfo(BaseModel):
    source: Literal["table", "rolling", "logodds", "none"] = Field(
        description="table: reliabilities learned on labelled data (the server's reliabilities file); rolling: "
        "fitted over recent traffic; logodds: the window is still too small, so log-odds pooling ran instead "
        "of the aggregation asked for; none: the aggregation uses no reliabilities")
    aggregation: str = Field(description="the aggregation that ran")
    n_items: int = Field(description="items behind the reliabilities (the rolling window's size)")


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
    seed: int = Field(description="the seed of this chain's draw of verifiers (pass it back to repeat the draw)")
    aggregation: str
    reliability: ReliabilityInfo
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
           "ErrorDetail", "MemberReport", "ModelInfo", "ModelsResponse", "PairAgreement", "ReliabilityInfo", "Status",
           "StepResult", "VerifyRequest", "VerifyResponse"]
