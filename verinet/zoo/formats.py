"""How zoo models see problems: the three prompt formats of their training mixture.

* solve:  ``<bos>QUESTION\\n`` -> ``CHAIN<eos>`` (CHAIN in the family's canonical format)
* verify: ``<bos>QUESTION\\nSTEP<v>\\nSTEP<v>\\n#### A<v>\\n`` — the model's next token at
  every ``<v>`` is ``<+>`` (valid) or ``<->`` (invalid), so one forward pass scores a
  whole chain (PRM style)
* force:  ``<bos>QUESTION\\nSTEPS\\n#### `` -> ``A<eos>`` — an answer after a chain that
  may be truncated, corrupted or replaced by filler
"""

from __future__ import annotations

from verinet.zoo.tokenizer import ANSWER_CUE, BOS, EOS, TAG

FILLER = " ..."


def solve_prompt(question: str) -> str:
    return f"{BOS}{question}\n"


def solve_target(chain_text: str) -> str:
    return f"{chain_text}{EOS}"


def verify_text(question: str, steps: list[str], answer: str | None) -> str:
    lines = [f"{s}{TAG}\n" for s in steps]
    if answer is not None:
        lines.append(f"{ANSWER_CUE} {answer}{TAG}\n")
    return f"{BOS}{question}\n" + "".join(lines)


def force_prompt(question: str, steps: list[str]) -> str:
    body = "".join(f"{s}\n" for s in steps)
    return f"{BOS}{question}\n{body}{ANSWER_CUE} "


def filler_prompt(question: str, n_chars: int) -> str:
    """The chain replaced by filler of the same length in characters (= tokens, for the zoo)."""
    reps = max(0, n_chars) // len(FILLER)
    return force_prompt(question, [FILLER * reps] if reps else [])


def force_target(answer: str) -> str:
    return f"{answer}{EOS}"


def likelihood_text(question: str, steps: list[str], answer: str | None) -> tuple[str, list[tuple[int, int]]]:
    """The solve prompt plus the chain as the model writes it, and each line's scored character span."""
    text = solve_prompt(question)
    spans = []
    for step in steps:
        start = len(text)
        text += f"{step}\n"
        spans.append((start, len(text)))
    if answer is not None:
        start = len(text)
        text += f"{ANSWER_CUE} {answer}{EOS}"
        spans.append((start, len(text)))
    return text, spans
