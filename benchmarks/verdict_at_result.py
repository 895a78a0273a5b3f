"""Can a trained verdict learn arith when it is read where the step's result is written?

    python benchmarks/verdict_at_result.py [--model zoo-l] [--steps 400] [--every 100]

A diagnostic for the trained verdict (docs/guide.md, "Why the trained verdict is blind on
arith"). A two-class head, initialised from the model's ``<->``/``<+>`` output rows, reads the
last hidden state AT each step's result digit in the solve layout (not at the ``<v>`` after the
step); the whole model and the head are fine-tuned (AdamW, lr 1e-3, batch 32) on arith chains of
1-4 steps, half of them with one injected wrong result, with a class-balanced loss on the lines
up to each chain's first error. Every ``--every`` steps it prints the AUROC of P(valid) at the
result digit on 100 held-out problems (3 steps, seed 9,000,000): wrong results against right
ones. Nothing is saved but the JSON of the curve; the model's solving after this is not measured.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.evaluate import EVAL_SEED
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import resolve
from verinet.zoo.tokenizer import INVALID, VALID


def encode(tok, fam, problems, rng: random.Random, inject_p: float = 0.5):
    """The solve-layout texts and, per line up to the first error, (row, token position, valid)."""
    texts, labels = [], []
    for p in problems:
        gold = fam.gold_chain(p)
        chain = fam.inject(p, "wrong_result", seed=rng.randrange(1 << 30)) if rng.random() < inject_p else gold
        text, spans = formats.likelihood_text(p.question, [s.text for s in chain.steps], chain.answer)
        check = fam.check(p, chain.text)
        last = len(chain.steps) - 1 if chain.first_error == -1 else min(chain.first_error, len(chain.steps) - 1)
        rows = []
        for k in range(last + 1):
            s, e = spans[k]
            line = text[s:e]
            rows.append((s + line.index(">", line.index(">") + 1) + 1, int(check.steps[k].valid)))
        texts.append(text)
        labels.append(rows)
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")
    at, ys = [], []
    for b, rows in enumerate(labels):
        start = {int(o[0]): t for t, o in enumerate(offsets[b]) if enc["attention_mask"][b, t]}
        for char, valid in rows:
            at.append((b, start[char]))
            ys.append(valid)
    return enc, at, ys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo-l")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/verdict_at_result.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_checkpoint(resolve(args.model))
    fam = get_family("arith")
    head = torch.nn.Linear(model.config.hidden_size, 2)
    with torch.no_grad():  # class 0 invalid, class 1 valid: the verdict rows of the output embedding
        head.weight.copy_(model.get_output_embeddings().weight[[tok.convert_tokens_to_ids(INVALID),
                                                                 tok.convert_tokens_to_ids(VALID)]])
        head.bias.zero_()
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.0)
    held_out = fam.sample(100, seed=EVAL_SEED, params={"steps": 3, "distractors": 0})

    def auroc() -> float:
        model.eval()
        with torch.inference_mode():
            enc, at, ys = encode(tok, fam, held_out, random.Random(7))
            h = model.model(**enc).last_hidden_state
            p = torch.softmax(head(torch.stack([h[b, t] for b, t in at])), -1)[:, 1]
        model.train()
        return float(roc_auc_score(ys, p.numpy()))

    curve = [{"step": 0, "auroc": auroc(), "seconds": 0.0}]
    print(f"{args.model}: step 0, wrong_result AUROC at the result digit {curve[-1]['auroc']:.3f}", flush=True)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        rng = random.Random(f"verdict-at-result:{step}")
        problems = [fam.generate(rng.getrandbits(31), {"steps": rng.choice([1, 2, 3, 4]), "distractors": 0})
                    for _ in range(32)]
        enc, at, ys = encode(tok, fam, problems, rng)
        h = model.model(**enc).last_hidden_state
        y = torch.tensor(ys)
        share = y.float().mean().clamp(0.05, 0.95)
        weight = torch.where(y == 1, 0.5 / share, 0.5 / (1 - share))
        loss = (F.cross_entropy(head(torch.stack([h[b, t] for b, t in at])), y, reduction="none") * weight).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            curve.append({"step": step, "auroc": auroc(), "seconds": time.perf_counter() - t0})
            print(f"  step {step}: AUROC {curve[-1]['auroc']:.3f} ({curve[-1]['seconds']:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "curve": curve}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
