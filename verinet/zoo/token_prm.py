"""A trained verifier that is not blind: a token-level process reward model (PRM).

The zoo's trained verdict reads P(valid) at the ``<v>`` after a step; there it would have to
recompute the step, which it never learns on arith (docs/guide.md, "Why the trained verdict is
blind on arith"). A solver does know, token by token, what should come next. So this PRM reads a
two-class head at *every* token of the chain in the solve layout (formats.likelihood_text) and
scores a step by its least valid token, like the likelihood kind, but trained on labels:

* every token of a gold chain is valid;
* in a chain with an error, the tokens before the first character that differs from the gold
  chain are valid and the token holding that character is invalid; the rest is unlabelled.
  A chain whose first difference is not in its first wrong line (a valid detour) is not used.

Negatives come from error injection (every kind the family has) and, optionally, from chains
that models wrote themselves, labelled by the exact checker. The result is a
``LlamaForTokenClassification`` (label 1 "valid"), initialised from the zoo checkpoint with the
verdict rows as its head (verinet.zoo.prm), that transformers and vLLM serve with ALL pooling.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from verinet.tasks import InjectionUnsupported, get_family
from verinet.zoo import formats
from verinet.zoo.prm import as_token_classifier

#: what the PRM trains on: the zoo ladder's own training slices, both families
TRAIN_SLICES: dict[str, list[dict[str, Any]]] = {
    "arith": [{"steps": s, "distractors": 0} for s in (1, 2, 3, 4)] + [{"steps": 3, "distractors": 1}],
    "logic": [{"hops": h, "distractors": 1} for h in (1, 2, 3)],
}
POOLING = "min"  # a step's P(valid) is that of its least valid token
TOKEN_LOSS_WEIGHT = 0.2  # beside the line loss
#: batches per family in each cycle (one family per batch): arith, whose results must be recomputed, gets more
FAMILY_CYCLE: tuple[str, ...] = ("arith", "arith", "logic")
#: how often each injected error kind is drawn: a wrong result is the hard one (docs/guide.md)
KIND_WEIGHTS: dict[str, float] = {"wrong_result": 3.0, "wrong_premise": 1.0, "dropped_step": 1.0, "answer_miscopy": 1.0}


def first_wrong_char(text: str, gold_text: str, spans: list[tuple[int, int]], first_error: int) -> int | None:
    """Index of the first character where ``text`` leaves ``gold_text``, if it lies in the span
    of line ``first_error`` (else None: the chain took a detour the labels cannot place)."""
    if not 0 <= first_error < len(spans):
        return None
    n = min(len(text), len(gold_text))
    d = next((i for i in range(n) if text[i] != gold_text[i]), n)
    a, b = spans[first_error]
    return d if a <= d < b else None


def labelled(question: str, steps: list[str], answer: str | None, gold: tuple[list[str], str | None],
             first_error: int) -> tuple[str, list[tuple[int, int]], int | None] | None:
    """(text, line spans, first wrong character or None for a correct chain), or None when unusable."""
    text, spans = formats.likelihood_text(question, steps, answer)
    if first_error == -1:
        return text, spans, None
    gold_text, _ = formats.likelihood_text(question, *gold)
    wrong = first_wrong_char(text, gold_text, spans, first_error)
    return None if wrong is None else (text, spans, wrong)


def token_targets(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], wrong: int | None
                  ) -> list[tuple[int, int]]:
    """``(token index, label)`` for the labelled tokens of one text (label 1 valid, 0 invalid)."""
    out = []
    for t, (s, e) in enumerate(offsets):
        if e <= s or not any(a <= s < b for a, b in spans):
            continue
        if wrong is None or e <= wrong:
            out.append((t, 1))
        elif s <= wrong:
            out.append((t, 0))
    return out


def line_targets(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], wrong: int | None
                 ) -> list[tuple[list[int], int]]:
    """``(token indices, label)`` per labelled line: every line of a correct chain (label 1); in a
    chain with an error, the lines before the wrong one (1) and the wrong one's tokens up to the
    first wrong character (0). The line's score is its least valid token, as at evaluation."""
    out = []
    for a, b in spans:
        if wrong is not None and a > wrong:
            break
        toks = [t for t, (s, e) in enumerate(offsets) if e > s and a <= s < b and (wrong is None or s <= wrong)]
        if toks:
            out.append((toks, 0 if wrong is not None and a <= wrong < b else 1))
    return out


def _balanced_nll(lp_valid: torch.Tensor, y: list[int]) -> torch.Tensor:
    """Class-balanced negative log-likelihood of labels ``y`` (1 valid) given log P(valid)."""
    yt = torch.tensor(y, dtype=torch.float32)
    share = yt.mean().clamp(0.01, 0.99)
    weight = torch.where(yt == 1, 0.5 / share, 0.5 / (1 - share))
    lp_invalid = torch.log(-torch.expm1(lp_valid.clamp(max=-1e-7)))  # log(1 - P(valid)), stably
    return -(weight * torch.where(yt == 1, lp_valid, lp_invalid)).mean()


def valid_logprobs(prm, tok, texts: list[str], *, batch_size: int = 32, grad: bool = False, valid_label: int = 1,
                   hidden_layer: int | None = None, hidden_out: list[torch.Tensor] | None = None
                   ) -> tuple[list[list[tuple[int, int]]], list[torch.Tensor]]:
    """Per text, its token character offsets and log P(valid) at every token (one pass, left-padded
    with explicit positions so each text scores as it would alone). With ``hidden_layer`` k, the
    residual stream after decoder layer k (1 = the first; before any final norm) of each text is
    appended to ``hidden_out``."""
    from contextlib import nullcontext

    from verinet.zoo.inference import encode_left_padded, layer_outputs

    offsets_out, logps = [], []
    device = next(prm.parameters()).device
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx, (nullcontext([]) if hidden_layer is None else layer_outputs(prm, hidden_layer)) as caught:
        for i in range(0, len(texts), batch_size):
            ids, mask, pos, offsets = encode_left_padded(tok, texts[i:i + batch_size], device)
            caught.clear()
            logits = prm(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
            lp = torch.log_softmax(logits, -1)[..., valid_label]
            for b in range(ids.shape[0]):
                start = ids.shape[1] - int(mask[b].sum())
                offsets_out.append([tuple(o) for o in offsets[b][start:]])
                logps.append(lp[b, start:])
                if hidden_layer is not None and hidden_out is not None:
                    hidden_out.append(caught[0][b, start:])
    return offsets_out, logps


def score_steps(prm, tok, texts_spans: list[tuple[str, list[tuple[int, int]]]], *, batch_size: int = 32
                ) -> list[list[float]]:
    """P(valid) of each line: the least valid of its tokens (a token belongs to the line its first
    character lies in; a line without tokens scores 1)."""
    from verinet.zoo.inference import pool_min

    offsets, logps = valid_logprobs(prm, tok, [t for t, _ in texts_spans], batch_size=batch_size)
    return [pool_min(text, [(s, e, v) for (s, e), v in zip(offs, lp.tolist()) if e > s], spans)
            for (text, spans), offs, lp in zip(texts_spans, offsets, logps, strict=True)]


def held_out_questions(n: int = 500) -> set[str]:
    """The questions of the zoo's held-out verifier slices (the first ``n`` of each), kept out of training."""
    from verinet.zoo.evaluate import EVAL_SEED
    from verinet.zoo.verifiers import VERIFIER_SLICES

    return {p.question for f, params in VERIFIER_SLICES.items() for p in get_family(f).sample(n, EVAL_SEED, params)}


def other_parity(text: str, gold_text: str, wrong: int) -> bool:
    """Whether the wrong character is a digit of the other parity than the gold chain's digit there."""
    a, b = text[wrong], gold_text[wrong] if wrong < len(gold_text) else ""
    return a.isdigit() and b.isdigit() and (int(a) - int(b)) % 2 == 1


MAX_REDRAWS = 8  # injections of a wrong result tried for one of the same parity before keeping the last


def sample_examples(rng: random.Random, n: int, families: tuple[str, ...], own: list[dict[str, Any]] | None = None,
                    p_error: float = 0.5, p_own: float = 0.25, exclude: frozenset[str] | set[str] = frozenset(),
                    same_parity: float = 0.0) -> list[tuple[str, list[tuple[int, int]], int | None]]:
    """``n`` labelled chains: gold or injected (every kind) from :data:`TRAIN_SLICES`, and some
    model-written chains with errors from ``own`` when given; no question in ``exclude``.
    ``same_parity``: the probability that an injected wrong result is drawn again (up to
    :data:`MAX_REDRAWS` draws in all) until its digit has the parity of the right one, so that more wrong
    results keep it (hard negatives against a verifier that checks only the parity; docs/guide.md)."""
    out: list[tuple[str, list[tuple[int, int]], int | None]] = []
    while len(out) < n:
        if own and rng.random() < p_error * p_own:
            r = rng.choice(own)
            out.append((r["text"], [tuple(s) for s in r["spans"]], r["wrong"]))
            continue
        name = rng.choice(families)
        fam = get_family(name)
        p = fam.generate(rng.getrandbits(31), rng.choice(TRAIN_SLICES[name]))
        if p.question in exclude:
            continue
        gold = ([s.text for s in p.gold_steps], p.answer)
        if rng.random() >= p_error:
            out.append(labelled(p.question, *gold, gold, -1))
            continue
        kinds = list(fam.error_kinds)
        try:
            kind = rng.choices(kinds, weights=[KIND_WEIGHTS.get(k, 1.0) for k in kinds])[0]
            redraw = kind == "wrong_result" and same_parity > 0 and rng.random() < same_parity
            gold_text = formats.likelihood_text(p.question, *gold)[0] if redraw else ""
            for _ in range(MAX_REDRAWS if redraw else 1):
                ch = fam.inject(p, kind, seed=rng.getrandbits(30))
                ex = labelled(p.question, [s.text for s in ch.steps], ch.answer, gold, ch.first_error)
                if ex is None or not redraw or not other_parity(ex[0], gold_text, ex[2]):
                    break
        except InjectionUnsupported:
            continue
        if ex is not None:
            out.append(ex)
    return out


def own_error_pool(writers: list[tuple[str, Any, Any]], n: int, *, seed: int,
                   families: tuple[str, ...] = tuple(TRAIN_SLICES),
                   slices: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Chains the ``writers`` wrote greedily on training problems (of :data:`TRAIN_SLICES`, or of
    ``slices`` per family, e.g. the harder ones where an ensemble's members err), with an error the
    checker found and a first wrong character the labels can place."""
    from verinet.zoo.verifiers import written_answer, written_chains

    pool = []
    for name in families:
        for writer, params, p, sc in written_chains(writers, name, (slices or TRAIN_SLICES).get(name, []), n,
                                                    seed=seed, seed_stride=1000):
            if sc.first_error == -1 or not sc.steps:
                continue
            ex = labelled(p.question, [s.text for s in sc.steps], written_answer(sc),
                          ([s.text for s in p.gold_steps], p.answer), sc.first_error)
            if ex is not None:
                pool.append({"text": ex[0], "spans": ex[1], "wrong": ex[2], "writer": writer, "family": name,
                             "params": params})
    return pool


def _count_by_slice(own: list[dict[str, Any]]) -> dict[str, int]:
    """{'arith steps=4': 120, ...}: how many own mistakes came from each slice."""
    counts: dict[str, int] = {}
    for r in own:
        key = " ".join([r["family"]] + [f"{k}={v}" for k, v in sorted(r.get("params", {}).items())])
        counts[key] = counts.get(key, 0) + 1
    return counts


STATE = ".train_state.pt"  # in the output directory while a run is unfinished


@torch.inference_mode()
def teacher_targets(model, tok, texts: list[str], *, batch_size: int = 32) -> list[torch.Tensor]:
    """Per text, one target per token (aligned with :func:`valid_logprobs`): how expected the token is
    to the solver ``model``, teacher-forced: P(token | prefix) / max P(any token | prefix), so the
    token the solver would write scores 1 even where it is unsure, and one it rules out scores near 0.
    The first token has no prefix: NaN (not a target)."""
    from verinet.zoo.inference import encode_left_padded

    out = []
    device = next(model.parameters()).device
    for i in range(0, len(texts), batch_size):
        ids, mask, pos, _ = encode_left_padded(tok, texts[i:i + batch_size], device)
        lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                     use_cache=False).logits.float(), -1)
        ratio = (lp[:, :-1].gather(2, ids[:, 1:, None])[..., 0] - lp[:, :-1].max(-1).values).exp()
        for b in range(ids.shape[0]):
            start = ids.shape[1] - int(mask[b].sum())
            out.append(torch.cat([ratio.new_full((1,), float("nan")), ratio[b, start:]]))
    return out


def _distill_loss(lp_valid: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of P(valid) against soft targets in [0, 1]."""
    lp_invalid = torch.log(-torch.expm1(lp_valid.clamp(max=-1e-7)))
    return -(target * lp_valid + (1 - target) * lp_invalid).mean()


def _next_token_loss(solver, tok, batch, offsets, hidden) -> torch.Tensor:
    """Mean cross-entropy of the next token at every position whose next token is labelled valid,
    from ``hidden`` (the PRM's residual stream after its backbone) through ``solver``'s norm and head."""
    h, y = [], []
    for (text, spans, wrong), offs, hid in zip(batch, offsets, hidden, strict=True):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        nxt = [t for t, label in token_targets(offs, spans, wrong) if label == 1 and t > 0]
        h.append(hid[[t - 1 for t in nxt]])
        y.extend(ids[t] for t in nxt)
    if not y:  # every chain wrong from its first character: nothing to predict (an empty mean is NaN)
        return hidden[0].new_zeros(())
    logits = solver.lm_head(solver.model.norm(torch.cat(h))).float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(y, device=logits.device))


def companion(checkpoint: str | Path) -> Path | None:
    """The token-level PRM trained from a zoo checkpoint (``CHECKPOINT/prm``), if there is one."""
    meta = Path(checkpoint) / "prm" / "prm.json"
    try:
        return meta.parent if json.loads(meta.read_text()).get("kind") == "token" else None
    except (OSError, ValueError):
        return None


def weights_digest(checkpoint: str | Path) -> str:
    """sha256 of a checkpoint's ``model.safetensors``: what tells the weights a PRM was trained from."""
    import hashlib

    return hashlib.sha256((Path(checkpoint) / "model.safetensors").read_bytes()).hexdigest()


def source_mismatch(prm_dir: str | Path, source: str | Path) -> str | None:
    """Why a PRM was not fine-tuned from ``source``'s current weights (None when it was, or when its
    ``prm.json`` does not record which weights it came from)."""
    info = json.loads((Path(prm_dir) / "prm.json").read_text())
    want = info.get("source_sha256")
    if want is None or want == weights_digest(source):
        return None
    return (f"the PRM {Path(prm_dir).name}/ was fine-tuned from other weights of {info.get('source')} than its "
            f"current ones (sha256 {want[:12]}..., {info.get('source_weights', 'an earlier run')}); retrain it "
            f"with `verinet zoo train-prm {info.get('source')}`")


def load_token_prm(path: str | Path, *, device: str = "cpu"):
    """(token classifier, tokenizer) of a token-level PRM directory, through safetensors only."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from verinet.zoo.config import ZooError

    p = Path(path)
    if not (p / "prm.json").is_file() or not (p / "model.safetensors").is_file():
        raise ZooError(f"{p}: no token-level PRM here (prm.json and model.safetensors); train one with "
                       "`verinet zoo train-prm NAME`")
    if json.loads((p / "prm.json").read_text()).get("kind") != "token":
        raise ZooError(f"{p}: this PRM is read at step tags (`verinet zoo prm`), not a token-level PRM; serve it "
                       "with step_pooling tag")
    try:
        net = AutoModelForTokenClassification.from_pretrained(p, use_safetensors=True, trust_remote_code=False)
        tok = AutoTokenizer.from_pretrained(p, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a damaged file
        raise ZooError(f"{p}: the PRM cannot be loaded ({type(e).__name__}: {str(e)[:200]}); retrain it") from None
    tok.padding_side = "left"
    return net.to(device).eval(), tok


def held_out_auroc(prm, tok, n: int, *, seed: int | None = None) -> dict[str, dict[str, float | None]]:
    """{family: {error kind: AUROC}} of the PRM on the zoo's held-out verifier slices (as `zoo eval`)."""
    from verinet.schema import ERROR_KINDS
    from verinet.zoo.evaluate import EVAL_SEED
    from verinet.zoo.verifiers import VERIFIER_SLICES, injected_auroc

    out = {}
    for f, params in VERIFIER_SLICES.items():
        res = injected_auroc(prm, tok, f, params, n, seed=EVAL_SEED if seed is None else seed, methods=("prm",))["prm"]
        out[f] = {k: None if res[k] is None else round(res[k], 4) for k in ERROR_KINDS}
    return out


def write_repro(path: str | Path, n: int) -> dict[str, Any]:
    """Store a small held-out AUROC sample in ``path/prm.json`` (``repro``) that tests rerun."""
    path = Path(path)
    prm, tok = load_token_prm(path)
    meta = json.loads((path / "prm.json").read_text())
    meta["repro"] = {"n_per_slice": n, "auroc": held_out_auroc(prm, tok, n)}
    (path / "prm.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta["repro"]


def train(source: str | Path, out: str | Path | None, *, steps: int, batch_size: int = 32, lr: float = 1e-3,
          seed: int = 0, families: tuple[str, ...] = tuple(TRAIN_SLICES), own: list[dict[str, Any]] | None = None,
          eval_every: int = 0, evaluate: Callable[[Any, Any], dict[str, Any]] | None = None,
          extra_layers: int = 0, init_from: str | Path | None = None, distill: float = 0.0,
          freeze_backbone: bool = False, same_parity: float = 0.0, lm_loss: float = 0.0,
          own_request: dict[str, Any] | None = None,
          log: Callable[[str], None] = print) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune a zoo checkpoint into a token-level PRM; save it to ``out`` (when given) with
    ``prm.json`` recording how. ``evaluate(prm, tok)`` runs every ``eval_every`` steps and at the end.
    With ``out``, the run saves its state at every evaluation and resumes from it (batch ``k``
    depends only on the seed and ``k``, so a resumed run trains on the same data). ``init_from``
    continues from a trained token-level PRM of ``source`` instead (its layers, not ``extra_layers``).
    ``distill`` > 0 adds, with that weight, a dense loss on every chain token towards the solver's own
    view of it (:func:`teacher_targets`, ``source`` as the teacher); not at a token labelled invalid,
    where the label rules (a chain ``source`` wrote itself has its own argmax there).
    ``freeze_backbone`` trains only the added layers, the final norm and the head. ``same_parity``:
    see :func:`sample_examples`. ``lm_loss`` > 0 adds, with that weight, the solver's own next-token
    loss on every token the labels call valid, read from the residual stream after the backbone's
    last layer through ``source``'s (frozen) final norm and output head: fine-tuning as a classifier
    otherwise erodes the prediction the PRM has to compare a written token with (docs/guide.md)."""
    from verinet.zoo.config import ZooError
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    src = resolve(source)
    out = Path(out) if out is not None else None
    if out is not None and (out / "prm.json").is_file():
        raise ZooError(f"{out}: a trained PRM is already here; remove it or choose another --out")
    if init_from is not None:
        prm, tok = load_token_prm(init_from)
        if json.loads((Path(init_from) / "prm.json").read_text()).get("source") != src.name:
            raise ZooError(f"{init_from}: a PRM of another checkpoint; continue it from its own source")
        if (why := source_mismatch(init_from, src)) is not None:  # lm_loss would read another backbone's head
            raise ZooError(why)
        extra_layers = prm.config.num_hidden_layers - json.loads((src / "config.json").read_text())["num_hidden_layers"]
        prm.train()
    else:
        model, tok = load_checkpoint(src)
        prm = as_token_classifier(model, tok, extra_layers)
        del model
    teacher = load_checkpoint(src)[0].eval() if distill > 0 or lm_loss > 0 else None
    if teacher is not None:
        teacher.requires_grad_(False)
    n_backbone = json.loads((src / "config.json").read_text())["num_hidden_layers"]
    if freeze_backbone:
        if lm_loss > 0:
            raise ZooError("lm_loss with freeze_backbone: the next-token loss reads the frozen backbone, so it "
                           "would train nothing; use one or the other")
        if prm.config.num_hidden_layers <= n_backbone:
            raise ZooError("freeze_backbone with no added layers would train only the final norm and the head; "
                           "add some (extra_layers, e.g. 2)")
        for name, p in prm.named_parameters():
            if name.startswith("model.embed_tokens") or any(name.startswith(f"model.layers.{i}.")
                                                              for i in range(n_backbone)):
                p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in prm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * max(0.1, 1 - s / max(1, steps)))
    curve: list[dict[str, Any]] = []
    exclude = held_out_questions()
    settings = {"source": str(src), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                "families": list(families), "own_error_chains": len(own or []), "extra_layers": extra_layers,
                "init_from": None if init_from is None else str(init_from), "distill": distill,
                "freeze_backbone": freeze_backbone, "same_parity": same_parity, "lm_loss": lm_loss,
                "source_sha256": weights_digest(src)}  # at the start: a resume on retrained weights is refused
    first, spent = 1, 0.0
    state_file = out / STATE if out is not None else None
    if state_file is not None and state_file.is_file():
        try:
            state = torch.load(state_file, weights_only=False)
        except Exception as e:  # noqa: BLE001 - a state cut short by a crash, or not ours
            raise ZooError(f"{state_file}: unreadable run state ({type(e).__name__}); delete it to start over") from None
        before_options = {"distill": 0.0, "freeze_backbone": False, "same_parity": 0.0, "lm_loss": 0.0,
                          "source_sha256": settings["source_sha256"]}  # not recorded before 2026-12-03
        if {**before_options, **state["settings"]} != settings:  # states saved before these options existed
            raise ZooError(f"{state_file}: an unfinished run with other settings ({state['settings']}) is here; "
                           "remove the directory or rerun with the same settings to resume it")
        prm.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        first, spent, curve = state["step"] + 1, state["seconds"], state["curve"]
        log(f"resuming at step {first} of {steps}")

    def checkpoint(step: int, seconds: float) -> None:
        if evaluate is None:
            return
        prm.eval()
        res = evaluate(prm, tok)
        prm.train()
        curve.append({"step": step, "seconds": round(seconds, 1), **res})
        log(f"step {step} ({seconds:.0f} s): {json.dumps(res)}")

    if first == 1:
        checkpoint(0, 0.0)
    prm.train()
    t0 = time.perf_counter() - spent
    for step in range(first, steps + 1):
        rng = random.Random(f"token-prm:{seed}:{step}")
        torch.manual_seed(rng.getrandbits(63))  # the head's dropout: the same masks after a resume
        cycle = [f for f in FAMILY_CYCLE if f in families] or list(families)
        family = cycle[step % len(cycle)]  # one family per batch: logic's long texts pad no arith batch
        batch = sample_examples(rng, batch_size, (family,), [r for r in own or [] if r["family"] == family],
                                exclude=exclude, same_parity=same_parity)
        hidden: list[torch.Tensor] = []
        offsets, logps = valid_logprobs(prm, tok, [t for t, _, _ in batch], batch_size=batch_size, grad=True,
                                        hidden_layer=n_backbone if lm_loss > 0 else None, hidden_out=hidden)
        lp, y, line_lp, line_y = [], [], [], []
        for (_, spans, wrong), offs, row in zip(batch, offsets, logps, strict=True):
            for t, label in token_targets(offs, spans, wrong):
                lp.append(row[t])
                y.append(label)
            for toks, label in line_targets(offs, spans, wrong):
                line_lp.append(row[toks].min())
                line_y.append(label)
        # the line loss (on the least valid token, as evaluated) puts the contrast between right and wrong
        # lines where they differ; the token loss alone lets "a result digit is suspect" absorb the errors
        loss = _balanced_nll(torch.stack(line_lp), line_y) + TOKEN_LOSS_WEIGHT * _balanced_nll(torch.stack(lp), y)
        if lm_loss > 0:
            loss = loss + lm_loss * _next_token_loss(teacher, tok, batch, offsets, hidden)
        if distill > 0:
            targets = teacher_targets(teacher, tok, [t for t, _, _ in batch], batch_size=batch_size)
            d_lp, d_y = [], []
            for (_, spans, wrong), offs, row, tgt in zip(batch, offsets, logps, targets, strict=True):
                invalid = {t for t, label in token_targets(offs, spans, wrong) if label == 0}
                keep = [t for t, (s, e) in enumerate(offs) if e > s and any(a <= s < b for a, b in spans)
                        and t not in invalid and not torch.isnan(tgt[t])]
                d_lp.append(row[keep])
                d_y.append(tgt[keep])
            loss = loss + distill * _distill_loss(torch.cat(d_lp), torch.cat(d_y))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prm.parameters(), 1.0)
        opt.step()
        sched.step()
        if eval_every and step % eval_every == 0 and step != steps:
            checkpoint(step, time.perf_counter() - t0)
            if state_file is not None:
                out.mkdir(parents=True, exist_ok=True)
                tmp = state_file.with_suffix(".tmp")  # replaced in one step: a crash never leaves half a state
                torch.save({"settings": settings, "model": prm.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "step": step, "seconds": time.perf_counter() - t0,
                            "curve": curve}, tmp)
                os.replace(tmp, state_file)
    seconds = time.perf_counter() - t0
    checkpoint(steps, seconds)
    info = {"source": src.name, "source_sha256": settings["source_sha256"], "kind": "token", "pooling": POOLING,
            "valid_label": 1,
            "labels": {0: "invalid", 1: "valid"}, "steps": steps, "batch_size": batch_size, "lr": lr,
            "seed": seed, "families": list(families), "train_slices": {f: TRAIN_SLICES[f] for f in families},
            "family_cycle": list(FAMILY_CYCLE), "kind_weights": KIND_WEIGHTS, "extra_layers": extra_layers,
            "init_from": None if init_from is None else str(init_from), "freeze_backbone": freeze_backbone,
            "loss": f"class-balanced line loss on each line's least valid token + {TOKEN_LOSS_WEIGHT} x token loss"
                    + (f" + {distill} x distillation towards the solver's P(token) / max P on every chain token"
                       if distill > 0 else "")
                    + (f" + {lm_loss} x the solver's next-token loss on valid tokens, after the backbone, through "
                       "its frozen norm and head" if lm_loss > 0 else ""),
            "distill": distill, "same_parity": same_parity, "lm_loss": lm_loss,
            "own_error_chains": len(own or []), "own_error_writers": sorted({r["writer"] for r in own or []}),
            "own_error_request": own_request,  # writers, problems per slice and slices asked for
            "own_error_by_slice": _count_by_slice(own or []),  # the placeable mistakes each slice gave
            "seconds": round(seconds, 1), "curve": curve,
            "how": "fine-tuned as a token-level PRM (verinet.zoo.token_prm): labels on every token up to and at "
                   "the first character that leaves the gold chain; a step scores its least valid token"}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        prm.eval().save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / "prm.json").write_text(json.dumps(info, indent=2) + "\n")
        if state_file is not None:
            state_file.unlink(missing_ok=True)
    return prm, tok, info
