"""Prompt formats per model family: how a backend is asked to solve, answer and verify.

* ``zoo`` — the zoo's canonical format (verinet.zoo.formats): chains in the task
  family's format; verification scores every step in one tagged pass.
* ``chat`` — real instruct models: the model's chat template, steps written as
  "Step k: ..." (or split on blank lines), and per step a verdict question answered
  Yes or No, scored from the Yes/No token log-probs (the prompts for step k share the
  prefix up to step k).

A format turns text into requests and results back into chains and P(valid) per step;
it never parses free text on the verification hot path.

For the faithfulness suite a format also writes a prompt that continues a chain from
given steps (``continue_prompt``), one whose chain is replaced by filler of the same
token count (``filler_prompt``), and, for models that take instructions, a request to
rewrite one step with a mistake or in other words (``edit_prompt``/``parse_edit``).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from verinet.backends.base import Backend, Usage
from verinet.tasks.base import ANSWER_CUE, split_chain
from verinet.zoo.inference import pool_min

Messages = list[dict[str, str]]
VerifyItem = tuple[str, list[str], "str | None"]  # (question, steps, answer)
EditTask = Literal["mistake", "paraphrase"]
Verifier = Literal["verdict", "likelihood", "prm"]
VERIFIERS: tuple[str, ...] = ("verdict", "likelihood", "prm")
FILLER = " ..."  # what a chain is replaced by in the filler test (Lanham et al. 2023)


@dataclass
class VerifyCall:
    """A backend call (method name and arguments, so it can run remotely) and how to read it."""

    method: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    decode: Callable[[Any], list[list[float]]] = lambda r: r


class PromptFormat(ABC):
    """How one model family is prompted. ``verifier`` picks how it scores steps:

    * ``verdict`` — the format's verdict tokens (the zoo's tagged ``<+>``/``<->`` pass; a chat
      model's Yes/No judgement per step);
    * ``likelihood`` — the model as a solver, teacher-forced over question and chain in one
      pass: a step is as plausible as its least likely counted token (see :func:`pool_min`);
    * ``prm`` — a process reward model: the chain laid out with ``step_tag`` after every line,
      the head's P(valid) read at each tag in one pass (``step_pooling="tag"``); or a token-level
      PRM read at every token of the likelihood layout, a step scoring its least valid token
      (``step_pooling="min"``). A PRM verifies only: it writes no chains.
    """

    name: str

    def __init__(self, verifier: Verifier = "verdict", step_tag: str | None = None, step_pooling: str = "tag") -> None:
        if verifier not in VERIFIERS:
            raise ValueError(f"verifier must be one of {list(VERIFIERS)}, got {verifier!r}")
        if step_pooling not in ("tag", "min"):
            raise ValueError(f"step_pooling must be 'tag' or 'min', got {step_pooling!r}")
        self.verifier = verifier
        self.step_tag = step_tag
        self.step_pooling = step_pooling

    @property
    def can_solve(self) -> bool:
        """Whether the member writes chains (a process reward model only scores them)."""
        return self.verifier != "prm"

    @abstractmethod
    def solve_prompt(self, question: str) -> str: ...

    @abstractmethod
    def parse(self, text: str) -> tuple[list[str], str | None]:
        """Generated text -> (steps, answer). Never raises."""

    #: what a forced answer starts with after :meth:`force_prompt` (the separator the format's answer
    #: line puts between the cue and the answer, where the prompt does not already end with it)
    answer_lead = ""

    @abstractmethod
    def force_prompt(self, question: str, steps: list[str]) -> str:
        """A prompt that makes the model answer right after the given (possibly altered) steps."""

    def verify_call(self, items: list[VerifyItem]) -> VerifyCall:
        """The one batched backend call that scores every step (and answer line) of ``items``."""
        if self.verifier == "likelihood":
            return self.likelihood_call(items)
        if self.verifier == "prm" and self.step_pooling == "min":
            return self.likelihood_call(items, method="token_scores", counts=lambda t: True)
        if self.verifier == "prm":
            return VerifyCall("score_steps", ([self.prm_text(q, steps, a) for q, steps, a in items],),
                              decode=lambda r: r.p_valid)
        return self.verdict_call(items)

    @abstractmethod
    def prm_text(self, question: str, steps: list[str], answer: str | None) -> str:
        """The text a process reward model scores: every step (and the answer line) ends in the step tag."""

    @abstractmethod
    def verdict_call(self, items: list[VerifyItem]) -> VerifyCall:
        """Scoring by the format's verdict tokens."""

    # ---- verification by likelihood ---------------------------------------------
    def step_prefix(self, i: int) -> str:
        """What the format writes before step ``i`` (not scored)."""
        return ""

    def likelihood_layout(self, question: str, steps: list[str], answer: str | None
                          ) -> tuple[str, list[tuple[int, int]]]:
        """The solve prompt followed by the chain as the model would write it, and the character
        span scored for each step (its text and the newline that ends it) and for the answer line
        (from the answer cue to the end)."""
        text = self.solve_prompt(question)
        spans = []
        for i, step in enumerate(steps):
            text += self.step_prefix(i)
            start = len(text)
            text += f"{step}\n"
            spans.append((start, len(text)))
        if answer is not None:
            start = len(text)
            text += f"{ANSWER_CUE} {answer}"
            spans.append((start, len(text)))
        return text, spans

    def counts(self, token_text: str) -> bool:
        """Whether a token of a step counts towards its likelihood score."""
        return True

    def likelihood_call(self, items: list[VerifyItem], method: str = "token_logprobs",
                        counts: Callable[[str], bool] | None = None) -> VerifyCall:
        """One pass over the likelihood layouts; a step scores its lowest token (log-prob of the token,
        or a token-level PRM's log P(valid) with ``method="token_scores"``)."""
        layouts = [self.likelihood_layout(q, steps, answer) for q, steps, answer in items]
        counts = counts or self.counts

        def decode(r) -> list[list[float]]:
            return [pool_min(text, toks, spans, counts)
                    for (text, spans), toks in zip(layouts, r.tokens, strict=True)]

        return VerifyCall(method, ([text for text, _ in layouts],), decode=decode)

    def verify(self, backend: Backend, question: str, chains: list[tuple[list[str], str | None]]
               ) -> tuple[list[list[float]], Usage]:
        """P(valid) for every step of every chain, plus one for the answer line when present."""
        call = self.verify_call([(question, steps, answer) for steps, answer in chains])
        result = getattr(backend, call.method)(*call.args, **call.kwargs)
        return call.decode(result), result.usage

    def chain_text(self, steps: list[str], answer: str | None) -> str:
        """Canonical chain text (what task checkers read)."""
        lines = list(steps) + ([f"{ANSWER_CUE} {answer}"] if answer is not None else [])
        return "\n".join(lines)

    # ---- faithfulness interventions ---------------------------------------------
    def continue_prompt(self, question: str, steps: list[str]) -> str:
        """A prompt after which the model writes the rest of the chain (more steps, then the answer)."""
        raise NotImplementedError(f"format {self.name} cannot continue a chain")

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` for this format's models (one per character unless a format knows better)."""
        return len(text)

    def filler_prompt(self, question: str, steps: list[str]) -> str:
        """The force prompt with the chain replaced by ``FILLER`` of (about) the same token count."""
        n = self.count_tokens("\n".join(steps))
        reps = n // max(1, self.count_tokens(FILLER))
        return self.force_prompt(question, [FILLER * reps] if reps else [])

    def edit_prompt(self, task: EditTask, question: str, step: str) -> str | None:
        """A request to rewrite ``step`` with a mistake or in other words; None if the models cannot."""
        return None

    def parse_edit(self, text: str) -> str:
        """The rewritten step from a reply to :meth:`edit_prompt`."""
        return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


class ZooFormat(PromptFormat):
    name = "zoo"

    def solve_prompt(self, question: str) -> str:
        from verinet.zoo.formats import solve_prompt

        return solve_prompt(question)

    def parse(self, text: str) -> tuple[list[str], str | None]:
        sc = split_chain(text)
        return sc.steps, sc.answer

    def force_prompt(self, question: str, steps: list[str]) -> str:
        from verinet.zoo.formats import force_prompt

        return force_prompt(question, steps)

    def verdict_call(self, items: list[VerifyItem]) -> VerifyCall:
        from verinet.zoo.formats import verify_text
        from verinet.zoo.tokenizer import INVALID, TAG, VALID

        texts = [verify_text(q, steps, answer) for q, steps, answer in items]
        return VerifyCall("score_tagged", (texts, TAG, VALID, INVALID), decode=lambda r: r.p_valid)

    def prm_text(self, question: str, steps: list[str], answer: str | None) -> str:
        from verinet.zoo.formats import verify_text
        from verinet.zoo.tokenizer import TAG

        if self.step_tag not in (None, TAG):
            raise ValueError(f"zoo PRMs score at {TAG!r}, not {self.step_tag!r}")
        return verify_text(question, steps, answer)  # the verdict layout: the same tag after every line

    def continue_prompt(self, question: str, steps: list[str]) -> str:
        return self.solve_prompt(question) + "".join(f"{s}\n" for s in steps)

    def likelihood_layout(self, question: str, steps: list[str], answer: str | None
                          ) -> tuple[str, list[tuple[int, int]]]:
        from verinet.zoo.formats import likelihood_text

        return likelihood_text(question, steps, answer)

    def filler_prompt(self, question: str, steps: list[str]) -> str:
        from verinet.zoo.formats import filler_prompt

        return filler_prompt(question, len("\n".join(steps)))  # one character is one zoo token


_STEP_MARK = re.compile(r"^\s*(?:\*\*)?step\s*\d+\s*[:.)]\s*(?:\*\*)?\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class ChatFormat(PromptFormat):
    """For instruct models. ``render(messages)`` applies the model's chat template."""

    name = "chat"
    system = "You are a careful, rigorous reasoner."
    verdicts = ("Yes", "No")
    # The forced prompts end at the cue, not after its space: subword tokenizers join the space to a word
    # answer (SmolLM2: '#### True' is '####', ' True'), so a prompt ending in ' ' would ask for 'True' with
    # no space, a split the model never saw. Digits are split from the space either way.
    answer_lead = " "

    #: the system prompt process reward models of the Qwen2.5-Math-PRM family were trained with
    prm_system = "Please reason step by step, and put your final answer within \\boxed{}."

    def __init__(self, render: Callable[[Messages], str], verifier: Verifier = "verdict",
                 step_tag: str | None = None, render_chat: Callable[[Messages], str] | None = None,
                 step_pooling: str = "tag") -> None:
        super().__init__(verifier, step_tag, step_pooling)
        if verifier == "prm" and step_pooling == "tag" and not step_tag:
            raise ValueError("format chat with verifier prm needs step_tag (Qwen2.5-Math-PRM: <extra_0>)")
        self.render = render
        self.render_chat = render_chat  # the template without a generation prompt (PRM inputs)

    def solve_prompt(self, question: str) -> str:
        return self.render([
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"{question}\n\nSolve this step by step. Write each step on its own line "
                                        f"as 'Step k: ...'. End with a final line '{ANSWER_CUE} <answer>'."},
        ])

    def parse(self, text: str) -> tuple[list[str], str | None]:
        body, answer = text, None
        cue = text.find(ANSWER_CUE)
        if cue >= 0:
            body = text[:cue]
            rest = text[cue + len(ANSWER_CUE):].strip().splitlines()
            answer = rest[0].strip() if rest else ""
        marked = [ln for ln in body.splitlines() if _STEP_MARK.match(ln)]
        if marked:
            steps = [_STEP_MARK.sub("", ln).strip() for ln in marked]
        else:
            steps = [" ".join(b.split()) for b in re.split(r"\n\s*\n", body) if b.strip()]
        if answer is None and steps:  # no cue: the last number of the last step, as GSM8K graders do
            nums = _NUMBER.findall(steps[-1])
            answer = nums[-1].replace(",", "") if nums else None
        return [s for s in steps if s], answer

    def _steps_block(self, steps: list[str]) -> str:
        return "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))

    def force_prompt(self, question: str, steps: list[str]) -> str:
        prompt = self.render([
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"{question}\n\nSolve this step by step. Write each step on its own line "
                                        f"as 'Step k: ...'. End with a final line '{ANSWER_CUE} <answer>'."},
        ])
        block = self._steps_block(steps)
        return f"{prompt}{block}\n{ANSWER_CUE}" if block else f"{prompt}{ANSWER_CUE}"

    def continue_prompt(self, question: str, steps: list[str]) -> str:
        block = self._steps_block(steps)
        return f"{self.solve_prompt(question)}{block}\n" if block else self.solve_prompt(question)

    def count_tokens(self, text: str) -> int:
        tok = getattr(self.render, "tokenizer", None)
        if tok is None:  # no tokenizer at hand: about four characters per token
            return -(-len(text) // 4)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def filler_prompt(self, question: str, steps: list[str]) -> str:
        n = self.count_tokens(self._steps_block(steps))
        per = self.count_tokens(FILLER * 64) / 64  # tokens per filler unit, as it tokenizes in a run
        filler = FILLER * round(n / per) if per > 0 else ""
        return f"{self.solve_prompt(question)}{filler}\n{ANSWER_CUE}"

    def edit_prompt(self, task: EditTask, question: str, step: str) -> str | None:
        ask = ("Rewrite this step so that it contains one mistake (a wrong number or a wrong conclusion) "
               "while keeping its form" if task == "mistake" else
               "Paraphrase this step: keep exactly its content and every number, change only the wording")
        return self.render([
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"Problem: {question}\n\nStep: {step}\n\n{ask}. "
                                        "Reply with the rewritten step only, on one line."},
        ])

    def parse_edit(self, text: str) -> str:
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        return _STEP_MARK.sub("", line).strip()

    def prm_text(self, question: str, steps: list[str], answer: str | None) -> str:
        """Qwen2.5-Math-PRM's layout: the question as the user turn, the chain as the assistant turn with
        the step tag after every step; the answer line is the last step, in the boxed form."""
        lines = list(steps) + ([f"The final answer is \\boxed{{{answer}}}."] if answer is not None else [])
        render = self.render_chat or self.render
        return render([
            {"role": "system", "content": self.prm_system},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "".join(f"{ln}{self.step_tag}" for ln in lines)},
        ])

    def verify_prompt(self, question: str, steps: list[str], k: int) -> str:
        return self.render([
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"Problem: {question}\n\nProposed solution so far:\n"
                                        f"{self._steps_block(steps[: k + 1])}\n\n"
                                        f"Is Step {k + 1} correct, given the problem and the steps before it? "
                                        "Answer Yes or No."},
        ])

    def step_prefix(self, i: int) -> str:
        return f"Step {i + 1}: "

    def counts(self, token_text: str) -> bool:
        """Numbers carry the claims of a word-problem step; its wording is free."""
        return any(c.isdigit() for c in token_text)

    def verdict_call(self, items: list[VerifyItem]) -> VerifyCall:
        prompts, shape = [], []
        for question, steps, answer in items:
            lines = list(steps) + ([f"The final answer is {answer}."] if answer is not None else [])
            shape.append(len(lines))
            prompts += [self.verify_prompt(question, lines, k) for k in range(len(lines))]

        def decode(r) -> list[list[float]]:
            flat = [1.0 / (1.0 + math.exp(no - yes)) for yes, no in r.logprobs]
            out, i = [], 0
            for n in shape:
                out.append(flat[i:i + n])
                i += n
            return out

        return VerifyCall("score", (prompts, list(self.verdicts)), decode=decode)


def chat_template_renderer(tokenizer, *, generation_prompt: bool = True) -> Callable[[Messages], str]:
    """``render`` for ChatFormat from a transformers tokenizer with a chat template; without the
    generation prompt it renders a whole conversation, as process reward models read it."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template; use format 'zoo' or a chat/instruct model")

    def render(messages: Messages) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    render.tokenizer = tokenizer  # type: ignore[attr-defined]  # lets the format count tokens
    return render


def make_format(name: str, backend: Backend | None = None, *, verifier: Verifier = "verdict",
                model: str | None = None, step_tag: str | None = None, step_pooling: str = "tag") -> PromptFormat:
    """The one prompt-format factory. ``chat`` renders the model's chat template with the
    backend's tokenizer, or, for engines without one (an OpenAI-compatible server, a Ray actor
    built elsewhere), with the tokenizer loaded from ``model`` (a local directory or cached id)."""
    if name == "zoo":
        return ZooFormat(verifier, step_tag, step_pooling)
    if name == "chat":
        tok = getattr(backend, "tok", None)
        if tok is None and model is not None:
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
            except Exception as e:  # transformers raises OSError, ValueError, ... for a bad directory
                raise ValueError(f"format chat needs the model's tokenizer; {model!r} has none that loads "
                                 f"offline ({type(e).__name__}: {str(e)[:200]})") from None
        if tok is None:
            raise ValueError(f"format chat needs the model's tokenizer; backend {getattr(backend, 'name', None)} "
                             "has none (give the model's directory, or use backend hf or vllm)")
        return ChatFormat(chat_template_renderer(tok), verifier, step_tag,
                          chat_template_renderer(tok, generation_prompt=False), step_pooling)
    raise ValueError(f"unknown prompt format {name!r}; choose 'zoo' or 'chat'")


def format_for(spec, backend: Backend | None = None) -> PromptFormat:
    """The prompt format of an ensemble member (a ``MemberSpec``)."""
    model = None if spec.format == "zoo" or getattr(backend, "tok", None) is not None else spec.model_location()
    return make_format(spec.format, backend, verifier=spec.verifier, model=model, step_tag=spec.prm_step_tag,
                       step_pooling=spec.step_pooling)
