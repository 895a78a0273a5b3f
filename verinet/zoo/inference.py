"""Batched greedy solving and one-pass tagged verdict scoring for zoo checkpoints.

These are the zoo's own minimal inference paths (used for model cards); the backends
layer wraps the same ideas behind one protocol for every engine.
"""

from __future__ import annotations

import torch

from verinet.zoo.tokenizer import INVALID, TAG, VALID


@torch.inference_mode()
def generate_greedy(model, tok, prompts: list[str], *, max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy continuation of each prompt, up to ``<eos>``; results in input order."""
    out: list[str] = []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i:i + batch_size], add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        out += tok.batch_decode(new, skip_special_tokens=True)
    return out


@torch.inference_mode()
def score_tagged(model, tok, texts: list[str], *, batch_size: int = 64, tag: str = TAG, valid: str = VALID,
                 invalid: str = INVALID) -> list[list[float]]:
    """P(valid) at every ``tag`` of each text, in one forward pass per batch.

    Only the hidden states at tag positions go through the output head, and only the
    two verdict rows of it are used: P(valid) = softmax([logit(valid), logit(invalid)])[0].
    """
    ids = [tok.convert_tokens_to_ids(t) for t in (tag, valid, invalid)]
    if tok.unk_token_id is not None and tok.unk_token_id in ids or None in ids:
        raise ValueError(f"tag {tag!r} and verdicts {valid!r}/{invalid!r} must each be one token of the vocabulary")
    tag_id = ids[0]
    rows = torch.tensor(ids[1:])
    head = model.get_output_embeddings().weight
    device = head.device
    out: list[list[float]] = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        hidden = model.model(**enc).last_hidden_state
        is_tag = enc["input_ids"] == tag_id
        logits = hidden[is_tag] @ head[rows.to(device)].T
        p = torch.softmax(logits.float(), dim=-1)[:, 0].tolist()
        counts = is_tag.sum(dim=1).tolist()
        k = 0
        for c in counts:
            out.append(p[k:k + c])
            k += c
    return out
