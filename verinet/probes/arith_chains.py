"""Arith chains in other renderings, their training examples, and a greedy decoder with a runtime.

The `tools` and `length` probes train zoo models on the same arith problems written in different
ways. Every rendering of a problem (``render``) ends with the answer line ``#### A``:

* ``one``: the family's canonical chain, one operation per line: ``x:i+t>i7+t0>7;x7``;
* ``tool``: the canonical line with the result handed to a calculator: ``x:i+t>i7+t0@7;x7``. The
  model writes the step up to its operands and the tool marker ``@`` (a printable character no task
  uses); the runtime writes the result (``7``) and the model goes on (``;x7``). Training never
  scores the result characters (they are inputs the model reads, not text it writes);
* ``multi``: ``group`` operations per line, the inner ones unwritten:
  ``l:(i+t)-i>(i7+t0)-i7>0;l0`` computes ``x`` and ``l`` in one step;
* ``spelled``: each operation as four lines, one action a line: read the definition, read each
  operand, compute: ``x:i+t`` / ``i7`` / ``t0`` / ``7+0>7;x7``;
* ``padded``: the canonical line followed by ``pad`` filler dots, longer than needed.

With ``instruct`` the prompt starts with ``!w;`` ("answer in words") and the answer line is
``#### seven`` (each digit a word, joined by ``-``).

``decode`` is batched greedy decoding with a key-value cache in which a per-sequence ``hook`` may
force text into the sequence after any token the model writes: the calculator of the ``tool``
rendering, or an intervention that overwrites a result. Forced tokens advance every sequence by one
position like any other, so the batch stays aligned.
"""

from __future__ import annotations

import inspect
import random
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from verinet.schema import Problem
from verinet.tasks import get_family
from verinet.tasks.arith import OPS
from verinet.zoo import formats
from verinet.zoo.config import ZooConfig, ZooError
from verinet.zoo.data import IGNORE, Example
from verinet.zoo.tokenizer import ANSWER_CUE

TOOL = "@"  # the calculator call: printable, one token, used by no task family
INSTRUCTION = "!w;"  # "answer in words", prefixed to the question
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
Kind = Literal["one", "tool", "multi", "spelled", "padded"]
KINDS: tuple[str, ...] = ("one", "tool", "multi", "spelled", "padded")

_OPERANDS = re.compile(r"(?P<a>[a-z])(?P<va>\d{1,6})(?P<op>[-+*])(?P<b>[a-z])(?P<vb>\d{1,6})$")


@dataclass(frozen=True)
class Rendering:
    """How chains are written: ``kind``, operations per line for ``multi``, filler dots for ``padded``."""

    kind: Kind = "one"
    group: int = 2
    pad: int = 12


@dataclass(frozen=True)
class Variant:
    """A rendering a model is trained on, and the tag its prompts start with: a model trained on several
    renderings is told by the tag which one to write (no tag: a model trained on one rendering)."""

    rendering: Rendering
    tag: str = ""


# ---- problems and their values ---------------------------------------------------------------
def true_values(problem: Problem, corrupt: dict[str, int] | None = None) -> dict[str, int]:
    """Every given and every needed variable's value; ``corrupt`` adds an offset to a result (and
    the steps after it compute from the changed value)."""
    meta = problem.meta
    mod = meta["modulus"]
    values = dict(meta["givens"])
    for name in meta["solution"]:
        a, op, b = meta["defs"][name]
        values[name] = (OPS[op](values[a], values[b]) + (corrupt or {}).get(name, 0)) % mod
    return values


def words(value: str) -> str:
    return "-".join(WORDS[int(d)] for d in value)


def prompt(problem: Problem, *, instruct: bool = False, tag: str = "") -> str:
    return formats.solve_prompt(tag + (INSTRUCTION if instruct else "") + problem.question)


# ---- renderings ------------------------------------------------------------------------------
def render(problem: Problem, rendering: Rendering, *, instruct: bool = False) -> list[tuple[str, bool]]:
    """The chain of ``problem`` as (text, written-by-the-model) segments; the calculator's results are
    the segments with False. ``"".join`` of the texts is the chain."""
    meta = problem.meta
    defs, needed, mod = meta["defs"], meta["solution"], meta["modulus"]
    values = true_values(problem)
    kind = rendering.kind
    segs: list[tuple[str, bool]] = []
    if kind == "multi":
        stated = set(meta["givens"])
        groups = [needed[i:i + rendering.group] for i in range(0, len(needed), rendering.group)]
        for grp in groups:
            last = grp[-1]

            def expr(name: str, with_values: bool, top: bool = False) -> str:
                if name in stated:
                    return f"{name}{values[name]}" if with_values else name
                a, op, b = defs[name]
                inner = f"{expr(a, with_values)}{op}{expr(b, with_values)}"
                return inner if top else f"({inner})"

            segs.append((f"{last}:{expr(last, False, True)}>{expr(last, True, True)}>{values[last]};"
                         f"{last}{values[last]}\n", True))
            stated.add(last)
    else:
        for name in needed:
            a, op, b = defs[name]
            head = f"{name}:{a}{op}{b}"
            operands = f"{a}{values[a]}{op}{b}{values[b]}"
            res = str(values[name])
            if kind == "one":
                segs.append((f"{head}>{operands}>{res};{name}{res}\n", True))
            elif kind == "padded":
                segs.append((f"{head}>{operands}>{res};{name}{res} {'.' * rendering.pad}\n", True))
            elif kind == "tool":
                segs += [(f"{head}>{operands}{TOOL}", True), (res, False), (f";{name}{res}\n", True)]
            elif kind == "spelled":
                segs.append((f"{head}\n{a}{values[a]}\n{b}{values[b]}\n{values[a]}{op}{values[b]}>{res};"
                             f"{name}{res}\n", True))
            else:
                raise ValueError(f"unknown rendering kind {kind!r}; one of {', '.join(KINDS)}")
    answer = str(values[meta["query"]] % mod)
    segs.append((f"{ANSWER_CUE} {words(answer) if instruct else answer}", True))
    return segs


def chain_text(problem: Problem, rendering: Rendering, *, instruct: bool = False) -> str:
    return "".join(t for t, _ in render(problem, rendering, instruct=instruct))


def to_canonical(text: str) -> str:
    """A ``tool`` chain as the family's canonical chain (the marker stands where ``>`` stood)."""
    return text.replace(TOOL, ">")


def read_answer(text: str) -> tuple[str | None, bool]:
    """(the answer as a decimal string or None, whether it was written in words) from a chain."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(ANSWER_CUE):
            a = line[len(ANSWER_CUE):].strip()
            if re.fullmatch(r"\d{1,6}", a):
                return str(int(a)), False
            parts = a.split("-")
            if a and all(p in WORDS for p in parts):
                return str(int("".join(str(WORDS.index(p)) for p in parts))), True
            return None, False
    return None, False


def read_statements(text: str) -> list[tuple[str, int]]:
    """Every ``;NAME VALUE`` restatement of a chain, in order (what each line concluded)."""
    return [(m[1], int(m[2])) for m in re.finditer(r";([a-z])(\d{1,6})", text)]


def tool_result(line: str, modulus: int) -> str | None:
    """What the calculator returns for a line that ends with its operands (``...>i7+t0``)."""
    m = _OPERANDS.search(line)
    if m is None:
        return None
    return str(OPS[m["op"]](int(m["va"]), int(m["vb"])) % modulus)


# ---- training examples -----------------------------------------------------------------------
class RenderedChainBuilder:
    """Training batches of solve examples in one or more renderings (a drop-in for the zoo's ExampleBuilder:
    ``batch(step)`` depends only on the seed and the step). Each example draws one of ``variants``
    uniformly. The calculator's results are inputs only: their targets are IGNORE. A share ``instruct``
    of the prompts carries the answer-in-words rule."""

    def __init__(self, config: ZooConfig, tokenizer, *, variants: Sequence[Variant], instruct: float = 0.0) -> None:
        if not variants:
            raise ValueError("RenderedChainBuilder needs at least one variant")
        self.config, self.tok, self.variants, self.instruct = config, tokenizer, list(variants), instruct

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def example(self, problem: Problem, variant: Variant, *, instruct: bool = False) -> Example:
        p = self.encode(prompt(problem, instruct=instruct, tag=variant.tag))
        ids, written = list(p), [False] * len(p)
        for text, by_model in render(problem, variant.rendering, instruct=instruct) + [(self.tok.eos_token, True)]:
            piece = self.encode(text)
            ids += piece
            written += [by_model] * len(piece)
        targets = [ids[i + 1] if written[i + 1] else IGNORE for i in range(len(ids) - 1)] + [IGNORE]
        return Example(ids, targets, "solve")

    def batch(self, step: int, *, seed: int | None = None, size: int | None = None) -> list[Example]:
        seed = self.config.training.seed if seed is None else seed
        size = size or self.config.training.batch_size
        rng = random.Random(f"probe-chains:{seed}:{step}")
        mix = rng.choices(self.config.tasks, weights=[t.weight for t in self.config.tasks])[0]
        fam = get_family(mix.family)
        out: list[Example] = []
        misses = 0
        while len(out) < size:
            problem = fam.generate(rng.getrandbits(31), rng.choice(mix.params))
            variant = self.variants[rng.randrange(len(self.variants))]
            ex = self.example(problem, variant, instruct=rng.random() < self.instruct)
            if len(ex.ids) <= self.config.size.max_len:
                out.append(ex)
            else:
                misses += 1
                if misses > 50 * size:
                    raise ZooError(f"{self.config.name}: training chains are longer than size.max_len "
                                   f"({self.config.size.max_len}); raise it")
        return out


def builder(variants: Sequence[Variant], instruct: float = 0.0
            ) -> Callable[[ZooConfig, object], RenderedChainBuilder]:
    return lambda config, tok: RenderedChainBuilder(config, tok, variants=variants, instruct=instruct)


# ---- decoding with a runtime -----------------------------------------------------------------
Hook = Callable[[str], "str | None"]  # generated text so far -> text to force in next, or None


@dataclass
class Decoded:
    text: str  # everything after the prompt, forced text included, up to <eos>
    forced: list[tuple[int, str]] = field(default_factory=list)  # (offset in text, what the runtime wrote)
    finished: bool = False  # the model wrote <eos> within the budget


@torch.inference_mode()
def decode(model, tok, prompts: Sequence[str], *, max_new_tokens: int,
           hooks: Sequence[Hook | None] | None = None, batch_size: int = 64) -> list[Decoded]:
    """Greedy continuation of each prompt (results in input order). After each token the model writes,
    ``hooks[i](text)`` may return text the runtime forces into sequence i next; forced tokens are not
    the model's choice and never call the hook."""
    hooks = list(hooks) if hooks is not None else [None] * len(prompts)
    strings = [tok.decode([i], skip_special_tokens=True) for i in range(len(tok))]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    device = next(model.parameters()).device
    # transformers 5.2x names the key-value cache `cache`; earlier versions `past_key_values`
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out: list[Decoded] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        hk = hooks[start:start + batch_size]
        enc = tok(batch, add_special_tokens=False, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache, logits, nxt_pos = _cache(res), res["logits"][:, -1], pos[:, -1] + 1
        got = [Decoded("") for _ in batch]
        queues: list[deque[int]] = [deque() for _ in batch]
        for _ in range(max_new_tokens):
            choice = logits.argmax(-1).tolist()
            step = []
            for i, d in enumerate(got):
                if d.finished:
                    step.append(pad)
                    continue
                if queues[i]:
                    t = queues[i].popleft()
                else:
                    t = choice[i]
                    if t == eos:
                        d.finished = True
                        step.append(pad)
                        continue
                    d.text += strings[t]
                    if hk[i] is not None and (extra := hk[i](d.text)):
                        d.forced.append((len(d.text), extra))
                        queues[i].extend(tok(extra, add_special_tokens=False)["input_ids"])
                    step.append(t)
                    continue
                d.text += strings[t]
                step.append(t)
            if all(d.finished for d in got):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            res = model(input_ids=torch.tensor(step, device=device)[:, None], attention_mask=mask,
                        position_ids=nxt_pos[:, None], use_cache=True, **{cache_arg: cache})
            cache, logits, nxt_pos = _cache(res), res["logits"][:, -1], nxt_pos + 1
        out += got
    return out


def _cache(res):
    return res["cache"] if "cache" in res else res["past_key_values"]


def calculator(modulus: int, *, corrupt_line: int | None = None, offset: int = 0,
               trigger: Literal["tool", "text"] = "tool") -> Hook:
    """A runtime hook. ``trigger="tool"``: at every tool marker write the result of the operands the
    line states (plus ``offset`` on line ``corrupt_line``). ``trigger="text"``: nothing runs, except
    that on line ``corrupt_line``, once the model has written the operands and the ``>`` that opens the
    result, the runtime writes the result plus ``offset`` in the model's place."""

    def hook(text: str) -> str | None:
        line_no = text.count("\n")
        line = text[text.rfind("\n") + 1:]
        if trigger == "tool":
            if not text.endswith(TOOL):
                return None
            value = tool_result(line[:-1], modulus)
        else:
            if line_no != corrupt_line or not text.endswith(">") or line.count(">") != 2:
                return None
            value = tool_result(line[:-1], modulus)
        if value is None:
            return None
        if line_no == corrupt_line:
            value = str((int(value) + offset) % modulus)
        return value

    return hook


__all__ = ["INSTRUCTION", "KINDS", "TOOL", "Decoded", "RenderedChainBuilder", "Rendering", "Variant", "builder",
           "calculator", "chain_text", "decode", "prompt", "read_answer", "read_statements", "render", "to_canonical",
           "tool_result", "true_values", "words"]
