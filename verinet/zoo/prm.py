"""Zoo checkpoints as process reward models (PRMs), the way the field serves them.

A zoo model's trained verdict is P(``<+>``) against P(``<->``) at the ``<v>`` after each step
(verinet.zoo.verifiers). That is a two-class token classifier read at a step tag, so the same
weights export, exactly, to a ``LlamaForTokenClassification`` checkpoint: the backbone as it is
and a two-row score head holding the tied output embedding's ``<->`` and ``<+>`` rows (label 0
"invalid", label 1 "valid"). transformers loads it with ``AutoModelForTokenClassification`` and
vLLM serves it with token classification and STEP pooling at ``<v>`` (verinet.backends), like
Qwen2.5-Math-PRM at ``<extra_0>``. The exported head gives the verdict kind's P(valid) to float
precision; a PRM fine-tuned further keeps the same layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from verinet.zoo.config import ZooError
from verinet.zoo.tokenizer import INVALID, TAG, VALID

LABELS = {0: "invalid", 1: "valid"}
VALID_LABEL = 1
STEP_TAG = TAG


def as_token_classifier(model, tok, extra_layers: int = 0):
    """A ``LlamaForTokenClassification`` with ``model``'s backbone and its verdict rows as the head.

    ``extra_layers`` new decoder layers go on top, copies of the last one with their output
    projections zeroed, so the network starts out computing exactly what ``model`` does; they give
    a trained PRM room to compare what the solver predicted one token earlier with the token there.
    """
    from transformers import LlamaConfig, LlamaForTokenClassification

    cfg = model.config.to_dict()
    n = cfg["num_hidden_layers"]
    cfg.update(architectures=["LlamaForTokenClassification"], num_labels=len(LABELS),
               id2label={str(k): v for k, v in LABELS.items()}, label2id={v: k for k, v in LABELS.items()},
               tie_word_embeddings=False, num_hidden_layers=n + extra_layers)
    if "layer_types" in cfg and cfg["layer_types"] is not None:
        cfg["layer_types"] = list(cfg["layer_types"]) + [cfg["layer_types"][-1]] * extra_layers
    prm = LlamaForTokenClassification(LlamaConfig(**cfg))
    missing, unexpected = prm.model.load_state_dict(model.model.state_dict(), strict=False)
    if unexpected or any(not k.startswith(tuple(f"layers.{n + i}." for i in range(extra_layers))) for k in missing):
        raise RuntimeError(f"backbone mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for i in range(extra_layers):
            new = prm.model.layers[n + i]
            new.load_state_dict(prm.model.layers[n - 1].state_dict())
            new.self_attn.o_proj.weight.zero_()
            new.mlp.down_proj.weight.zero_()
    rows = [tok.convert_tokens_to_ids(t) for t in (INVALID, VALID)]
    with torch.no_grad():
        prm.score.weight.copy_(model.get_output_embeddings().weight[rows])
        if getattr(prm.score, "bias", None) is not None:
            prm.score.bias.zero_()
    return prm


def export_prm(source: str | Path, out: str | Path) -> Path:
    """Write ``source`` (a zoo checkpoint name or directory) as a token-classification PRM in ``out``."""
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    src = resolve(source)
    out = Path(out)
    if out.resolve() == src.resolve() or (out.is_dir() and any(out.iterdir())):
        raise ZooError(f"{out}: the PRM must go to a new or empty directory, not over its source or another "
                       "checkpoint")
    model, tok = load_checkpoint(src)
    prm = as_token_classifier(model, tok)
    out.mkdir(parents=True, exist_ok=True)
    prm.eval().save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "prm.json").write_text(json.dumps({
        "source": src.name, "step_tag": STEP_TAG, "valid_label": VALID_LABEL, "labels": LABELS,
        "how": "exported from the zoo checkpoint's verdict rows (verinet zoo prm); P(valid) at each step tag "
               "equals the checkpoint's verdict kind"}, indent=2) + "\n")
    return out
