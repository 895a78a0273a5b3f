"""Building, counting and loading zoo models: plain transformers Llama checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from verinet.zoo.config import MIN_HEAD_DIM, ModelSize, ZooError


def llama_config(size: ModelSize, tokenizer) -> LlamaConfig:
    head_dim = size.hidden // size.heads
    if head_dim < MIN_HEAD_DIM:  # ModelSize already refuses this; guard direct callers too
        raise ZooError(f"head_dim {head_dim} < {MIN_HEAD_DIM}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        head_dim=head_dim,
        max_position_embeddings=size.max_len,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(size: ModelSize, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(size, tokenizer))


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total and non-embedding parameters (the input embedding is tied to the output head)."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - embed}


def load_checkpoint(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) from a zoo checkpoint directory, through safetensors only."""
    p = Path(path)
    if not p.is_dir():
        raise ZooError(f"{p}: no checkpoint directory here; `verinet zoo list` shows the installed ones")
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (p / f).is_file()]
    if missing:
        raise ZooError(f"{p}: incomplete checkpoint, missing {', '.join(missing)}; retrain it with "
                       "`verinet zoo train --config configs/zoo/NAME.yaml`")
    try:
        json.loads((p / "config.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=False)
        tok = AutoTokenizer.from_pretrained(p, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a damaged file
        raise ZooError(f"{p}: checkpoint cannot be loaded ({type(e).__name__}: {str(e)[:200]}); "
                       "it is corrupt, retrain it with `verinet zoo train`") from None
    tok.padding_side = "left"
    return model.to(device).eval(), tok
