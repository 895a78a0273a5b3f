"""Where a zoo model knows that a step is wrong: linear probes on its last hidden state.

    python benchmarks/verdict_probe.py [--model zoo-l] [--train 1500] [--test 400]
    python benchmarks/verdict_probe.py --prm verinet/zoo/models/zoo-l/prm   # the token PRM's last layer

Held-out arith problems (3 steps, no distractors), every other chain with one injected wrong
result; lines up to each chain's first error. Three places are probed, each with two logistic
regressions (scikit-learn), fitted on the training problems and scored on the test problems:

* ``verdict_tag``   -- the ``<v>`` after each step in the verify layout, where the trained verdict
                       is read;
* ``before_result`` -- the position before the step's result digit in the solve layout, where the
                       solver predicts it (verification by likelihood reads this prediction);
* ``at_result``     -- the result digit itself.

For each: the AUROC of "this line is valid" (also on the test lines whose wrong digit keeps the
right one's parity: a probe that reads only the parity is at chance there), the accuracy of
decoding the *correct* result digit (chance: the most frequent digit) and its parity. With
``--prm`` the probes read a token-level PRM's last hidden state (after its added layers) instead
of the solver's; ``--layer k`` reads the residual stream after decoder layer k instead. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.inference import layer_outputs
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import resolve
from verinet.zoo.tokenizer import TAG

PLACES = ("verdict_tag", "before_result", "at_result")


def _result_digit(step_text: str) -> str:
    return step_text.split(">")[-1].split(";")[0]


def _hidden(model, enc, layer: int | None) -> torch.Tensor:
    """The last hidden state (after the final norm), or the residual stream after decoder layer
    ``layer`` (1 = the first), caught before any norm."""
    if layer is None:
        return model.model(**enc).last_hidden_state
    with layer_outputs(model, layer) as caught:
        model.model(**enc)
    return caught[0]


def features(model, tok, n: int, seed: int, layer: int | None = None) -> dict[str, tuple[np.ndarray, ...]]:
    """Per place: hidden states, validity, the correct result digit and the written one, one row per line."""
    fam = get_family("arith")
    tag = tok.convert_tokens_to_ids(TAG)
    rows: dict[str, tuple[list, list, list, list]] = {p: ([], [], [], []) for p in PLACES}
    verify_texts, solve_texts, meta = [], [], []
    for i, p in enumerate(fam.sample(n, seed=seed, params={"steps": 3, "distractors": 0})):
        gold = fam.gold_chain(p)
        chain = gold if i % 2 else fam.inject(p, "wrong_result", seed=i)
        steps = [s.text for s in chain.steps]
        check = fam.check(p, chain.text)
        last = len(steps) - 1 if chain.first_error == -1 else min(chain.first_error, len(steps) - 1)
        labels = [(int(check.steps[k].valid), _result_digit(gold.steps[k].text), _result_digit(steps[k]))
                  for k in range(last + 1)]
        verify_texts.append(formats.verify_text(p.question, steps, chain.answer))
        text, spans = formats.likelihood_text(p.question, steps, chain.answer)
        digits = []
        for k in range(last + 1):
            s, e = spans[k]
            line = text[s:e]
            digits.append(s + line.index(">", line.index(">") + 1) + 1)  # the result digit's offset
        solve_texts.append(text)
        meta.append((labels, digits))
    with torch.inference_mode():
        for i in range(0, n, 64):
            enc = tok(verify_texts[i:i + 64], add_special_tokens=False, padding=True, return_tensors="pt")
            h = _hidden(model, enc, layer)
            for b in range(h.shape[0]):
                labels, _ = meta[i + b]
                pos = (enc["input_ids"][b] == tag).nonzero().flatten().tolist()
                for (valid, digit, written), t in zip(labels, pos):
                    for arr, v in zip(rows["verdict_tag"], (h[b, t].numpy(), valid, digit, written)):
                        arr.append(v)
            enc = tok(solve_texts[i:i + 64], add_special_tokens=False, padding=True, return_tensors="pt",
                      return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
            h = _hidden(model, enc, layer)
            for b in range(h.shape[0]):
                labels, digits = meta[i + b]
                start = {int(o[0]): t for t, o in enumerate(offsets[b]) if enc["attention_mask"][b, t]}
                for (valid, digit, written), j in zip(labels, digits):
                    t = start[j]
                    for place, at in (("before_result", t - 1), ("at_result", t)):
                        for arr, v in zip(rows[place], (h[b, at].numpy(), valid, digit, written)):
                            arr.append(v)
    return {p: tuple(np.array(a) for a in arrays) for p, arrays in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo-l")
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--prm", type=Path, default=None, help="a token-level PRM directory: probe its hidden "
                    "states instead of --model's")
    ap.add_argument("--layer", type=int, default=None, help="probe the residual stream after this decoder layer "
                    "(1 = the first) instead of the last hidden state")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/verdict_probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.prm is not None:
        from verinet.zoo.token_prm import load_token_prm

        model, tok = load_token_prm(args.prm)
        name = str(args.prm)
    else:
        model, tok = load_checkpoint(resolve(args.model))
        name = args.model
    if args.layer is not None and not 1 <= args.layer <= len(model.model.layers):
        ap.error(f"--layer {args.layer}: {name} has decoder layers 1..{len(model.model.layers)}")
    train = features(model, tok, args.train, seed=1, layer=args.layer)
    test = features(model, tok, args.test, seed=2, layer=args.layer)
    if args.layer is not None:
        name += f" (after layer {args.layer})"
    out = {"model": name, "layer": args.layer, "train_problems": args.train, "test_problems": args.test, "places": {}}
    print(f"{name}: linear probes, {args.train} training / {args.test} test problems (arith, 3 steps)")
    print(f"  {'place':<14} {'lines':>6} {'validity AUROC':>15} {'same parity':>12} {'correct digit':>14} "
          f"{'chance':>7} {'its parity':>11}")
    for place in PLACES:
        (x, y, d, _), (xt, yt, dt, wt) = train[place], test[place]
        if args.layer is not None:  # the residual stream before a norm: scaled, or the fits barely converge
            mu, sd = x.mean(0), x.std(0) + 1e-6
            x, xt = (x - mu) / sd, (xt - mu) / sd
        valid = LogisticRegression(max_iter=3000, class_weight="balanced").fit(x, y)
        digit = LogisticRegression(max_iter=3000).fit(x, d)
        parity = LogisticRegression(max_iter=3000).fit(x, d.astype(int) % 2)
        p_valid = valid.predict_proba(xt)[:, 1]
        # valid lines against the wrong ones whose digit keeps the right digit's parity
        same = (yt == 1) | ((dt.astype(int) - wt.astype(int)) % 2 == 0)
        row = {"lines_train": len(y), "lines_test": len(yt),
               "validity_auroc": float(roc_auc_score(yt, p_valid)),
               "validity_auroc_same_parity": float(roc_auc_score(yt[same], p_valid[same])),
               "same_parity_errors_test": int((same & (yt == 0)).sum()),
               "digit_accuracy": float(digit.score(xt, dt)),
               "digit_chance": float(max(np.mean(dt == v) for v in set(dt))),
               "parity_accuracy": float(parity.score(xt, dt.astype(int) % 2))}
        out["places"][place] = row
        print(f"  {place:<14} {row['lines_test']:>6} {row['validity_auroc']:>15.3f} "
              f"{row['validity_auroc_same_parity']:>12.3f} {row['digit_accuracy']:>14.3f} {row['digit_chance']:>7.3f} "
              f"{row['parity_accuracy']:>11.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
