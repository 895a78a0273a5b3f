"""The backend protocol: one small, batched interface over every inference engine.

Every engine (``hf``, ``vllm``, ``openai``) implements the same three calls, accepts a
list of prompts and returns results in input order, and reports the tokens it
processed so the comparison can account for cost:

* ``generate`` — sampled or greedy continuations;
* ``score`` — log-probs of candidate continuations (e.g. verdict tokens), computing
  output logits only at the positions it reads;
* ``score_tagged`` — P(valid) at every occurrence of a tag, one forward pass per text
  (PRM-style verifiers such as the zoo models);
* ``score_steps`` — for process reward models (a token-classification head): P(valid) at every
  step tag of each text, one forward pass per text (the model was loaded as a PRM);
* ``token_logprobs`` — log P(token | everything before it) for every token of each text,
  teacher-forced in one forward pass, with each token's character span (verification by
  likelihood: a step is as plausible as its least likely token).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class BackendError(RuntimeError):
    """A backend that cannot be built or called; the message says what to fix."""


@dataclass
class Usage:
    """Tokens processed: prompt tokens run through the model, and tokens generated."""

    prefill: int = 0
    decode: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prefill + other.prefill, self.decode + other.decode)

    @property
    def total(self) -> int:
        return self.prefill + self.decode


@dataclass
class Completion:
    text: str
    tokens: int  # generated tokens
    finish_reason: str = "stop"  # "stop" (eos or a stop string) or "length"


@dataclass
class GenerateResult:
    completions: list[list[Completion]]  # [prompt][sample]
    usage: Usage = field(default_factory=Usage)

    @property
    def texts(self) -> list[str]:
        """The first sample of each prompt."""
        return [c[0].text for c in self.completions]


@dataclass
class ScoreResult:
    logprobs: list[list[float]]  # [prompt][candidate]: log P(candidate | prompt)
    usage: Usage = field(default_factory=Usage)


@dataclass
class TaggedResult:
    p_valid: list[list[float]]  # [text][tag occurrence]
    usage: Usage = field(default_factory=Usage)


@dataclass
class TokenLogprobs:
    """Per text, one ``(start, end, logprob)`` per token after the first: the token's character
    span in the text and log P(token | all tokens before it)."""

    tokens: list[list[tuple[int, int, float]]]
    usage: Usage = field(default_factory=Usage)


class Backend(ABC):
    """One loaded model behind the protocol. Subclasses live one per file, registered by name."""

    name: str = ""

    @abstractmethod
    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None) -> GenerateResult:
        ...

    @abstractmethod
    def score(self, prompts: list[str], candidates: list[str]) -> ScoreResult:
        """log P(candidate | prompt) for every prompt and every candidate continuation."""

    @abstractmethod
    def score_tagged(self, texts: list[str], tag: str, valid: str, invalid: str) -> TaggedResult:
        """P(valid) = softmax over the two verdict tokens, read at every occurrence of ``tag``."""

    def score_steps(self, texts: list[str]) -> TaggedResult:
        """A process reward model's P(valid) at every occurrence of its step tag, one pass per text."""
        raise BackendError(f"backend {self.name}: this member was not loaded as a process reward model read at "
                           "step tags (set verifier: prm and step_pooling: tag in its member spec; a token-level "
                           "PRM, step_pooling: min, is read by token_scores)")

    def token_scores(self, texts: list[str]) -> TokenLogprobs:
        """A token-level process reward model's log P(valid) at every token of each text, one pass per
        text, as ``(start, end, log P(valid))`` rows (the shape of :meth:`token_logprobs`)."""
        raise BackendError(f"backend {self.name}: this member was not loaded as a token-level process reward "
                           "model (set verifier: prm and step_pooling: min in its member spec)")

    def token_logprobs(self, texts: list[str]) -> TokenLogprobs:
        """log P(token | prefix) of every token of each text after the first, in one teacher-forced pass."""
        raise BackendError(f"backend {self.name} cannot return prompt log-probs; use verifier 'verdict'")

    def info(self) -> dict[str, Any]:
        """Model identity and size, for reports and the endpoint's model list."""
        return {"backend": self.name}

    def close(self) -> None:
        """Free the model's memory (engines with worker processes shut them down)."""


def step_tag_id(tok, tag: str, model: str) -> int:
    """The token id of a PRM's step tag, which must be exactly one token of the model's tokenizer."""
    ids = tok(tag, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise BackendError(f"{model}: step_tag {tag!r} is {len(ids)} tokens for this tokenizer; a PRM scores at "
                           "a single token (Qwen2.5-Math-PRM: <extra_0>, zoo PRMs: <v>)")
    return ids[0]


def check_sampling(n: int, temperature: float, top_p: float, max_tokens: int) -> None:
    """Reject bad sampling parameters with a message that names the parameter and its range."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if n > 1 and temperature == 0:
        raise ValueError("n > 1 needs temperature > 0 (greedy decoding gives n identical samples)")


def peak_memory() -> dict[str, int]:
    """This process's peak resident memory, and the GPU's peak allocation where torch used one."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    return out
