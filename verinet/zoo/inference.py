"""Batched greedy solving and one-pass tagged verdict scoring for zoo checkpoints.

These are the zoo's own minimal inference paths (used for model cards); the backends
layer wraps the same ideas behind one protocol for every engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from verinet.zoo.tokenizer import INVALID, TAG, VALID


@torch.inference_mode()
def generate_greedy(model, tok, prompts: list[str], *, max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy continuation of each prompt, up to ``<eos>``, ``max_new_tokens`` or the end of the model's
    positions (a zoo model never saw a position past its ``max_len``), counted from the batch's longest
    prompt; results in input order."""
    out: list[str] = []
    device = next(model.parameters()).device
    positions = getattr(model.config, "max_position_embeddings", None)
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i:i + batch_size], add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        room = max_new_tokens if positions is None else min(max_new_tokens, positions - enc["input_ids"].shape[1])
        if room < 1:
            raise ValueError(f"a prompt of {enc['input_ids'].shape[1]} tokens leaves no room to generate in the "
                             f"model's {positions} positions")
        gen = model.generate(**enc, max_new_tokens=room, do_sample=False,
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
        hidden = model.model(**enc, use_cache=False).last_hidden_state  # one pass: no KV cache to keep
        is_tag = enc["input_ids"] == tag_id
        logits = hidden[is_tag] @ head[rows.to(device)].T
        p = torch.softmax(logits.float(), dim=-1)[:, 0].tolist()
        counts = is_tag.sum(dim=1).tolist()
        k = 0
        for c in counts:
            out.append(p[k:k + c])
            k += c
    return out


@contextmanager
def layer_outputs(model, layer: int) -> Iterator[list[torch.Tensor]]:
    """Within the block, the residual stream after decoder layer ``layer`` (1 = the first; before any
    final norm) of every forward pass of ``model`` (a Llama-style ``*For*`` model) is appended to the
    yielded list."""
    layers = model.model.layers
    if not 1 <= layer <= len(layers):
        raise ValueError(f"layer {layer}: the model has decoder layers 1..{len(layers)}")
    caught: list[torch.Tensor] = []
    hook = layers[layer - 1].register_forward_hook(
        lambda _m, _i, out: caught.append(out[0] if isinstance(out, tuple) else out))
    try:
        yield caught
    finally:
        hook.remove()


def encode_left_padded(tok, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """(input ids, attention mask, position ids, character offsets) of left-padded ``texts``; the
    explicit positions make each text score exactly as it would alone."""
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping").tolist()
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), offsets


# output-head logits computed at once: 2^24 floats, 64 MB per copy (the head's output, its float
# copy and the log-softmax each hold one), whatever the vocabulary (a block holds one position at least)
LOGIT_BUDGET = 1 << 24


@torch.inference_mode()
def token_logprobs(model, tok, texts: list[str], *, batch_size: int = 32) -> list[list[tuple[int, int, float]]]:
    """Per text, ``(start, end, log P(token | prefix))`` for every token after the first.

    One teacher-forced forward pass per batch, left-padded with explicit position ids, so
    each text scores exactly as it would alone. The output head and log-softmax run over the
    batch's scored positions in blocks of at most ``LOGIT_BUDGET`` logits, which bounds memory
    for large vocabularies and costs one call per block, not one per text, for small ones.
    """
    head = model.get_output_embeddings()
    device = head.weight.device
    block = max(1, LOGIT_BUDGET // head.weight.shape[0])
    out: list[list[tuple[int, int, float]]] = []
    for i in range(0, len(texts), batch_size):
        ids, mask, pos, offsets = encode_left_padded(tok, texts[i:i + batch_size], device)
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                             use_cache=False).last_hidden_state
        scored = (mask[:, :-1] * mask[:, 1:]).bool()  # positions whose next token is real: it is scored
        h, target = hidden[:, :-1][scored], ids[:, 1:][scored]
        lp = torch.cat([torch.log_softmax(head(h[j:j + block]).float(), -1)
                        .gather(1, target[j:j + block, None])[:, 0]
                        for j in range(0, len(h), block)]).tolist() if len(h) else []
        k = 0
        for b, n in enumerate(scored.sum(1).tolist()):
            spans = offsets[b][ids.shape[1] - n:]  # left-padded: a row's scored tokens are its last n
            out.append([(s, e, v) for (s, e), v in zip(spans, lp[k:k + n], strict=True)])
            k += n
    return out


def pool_min(text: str, tokens: list[tuple[int, int, float]], spans: list[tuple[int, int]],
             counts: Callable[[str], bool] = lambda t: True) -> list[float]:
    """Score of each span: the probability of its least likely counted token (a token belongs to
    the span its first character lies in). A span with no counted token uses all of its tokens;
    a span with no token at all scores 1."""
    out = []
    for a, b in spans:
        inside = [(s, e, lp) for s, e, lp in tokens if a <= s < b]
        chosen = [lp for s, e, lp in inside if counts(text[s:e])] or [lp for _, _, lp in inside]
        out.append(math.exp(min(chosen)) if chosen else 1.0)
    return out
