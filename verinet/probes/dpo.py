"""Direct preference optimisation of a zoo checkpoint with TRL's ``DPOTrainer``, as one resumable stage.

Pairs are plain strings in the zoo's solve format: ``prompt`` = ``<bos>QUESTION\\n`` (plus any steps
both completions share), ``chosen`` / ``rejected`` = the rest of the chain (TRL appends ``<eos>``).
The zoo's character tokenizer is the processing class. The result is saved as a zoo checkpoint
directory (config.json, model.safetensors, tokenizer.json) that :func:`verinet.zoo.model.load_checkpoint`
and the faithfulness suite read, plus ``dpo.json``: the spec, TRL's log, and the DPO loss and the
chosen-vs-rejected margin on the training pairs measured before and after (by this module, not TRL).

A finished stage (``dpo.json`` written last, with the same spec and pairs) is skipped on a rerun; a
killed one restarts from its initial checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from verinet.probes.config import ProbeError
from verinet.zoo.tokenizer import EOS

DONE = "dpo.json"


class DPOSpec(BaseModel):
    """The DPO stage's optimiser settings (TRL ``DPOConfig`` fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=200, ge=1, le=1_000_000, description="optimizer steps")
    batch_size: int = Field(default=8, ge=1, le=1024, description="pairs per step")
    lr: float = Field(default=1e-4, gt=0, le=1.0)
    beta: float = Field(default=0.1, gt=0, description="DPO's beta: higher keeps the policy nearer the reference")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    sft_weight: float = Field(default=0.0, ge=0, description="> 0 adds TRL's 'sft' loss on the chosen chains with "
                                                            "this weight (RPO); 0 is plain DPO")
    warmup: float = Field(default=0.05, ge=0, lt=1, description="share of steps for linear warm-up")


def _pairs_digest(pairs: Sequence[Mapping[str, str]]) -> str:
    h = hashlib.sha1()
    for p in pairs:
        h.update(json.dumps([p["prompt"], p["chosen"], p["rejected"]]).encode())
    return h.hexdigest()


def is_done(out: Path) -> bool:
    return (out / DONE).is_file() and (out / "model.safetensors").is_file() and (out / "config.json").is_file()


@torch.inference_mode()
def completion_logps(model, tok, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 32
                     ) -> list[float]:
    """log P(completion + <eos> | prompt) under ``model``, summed over the completion's tokens."""
    from verinet.zoo.inference import token_logprobs

    texts = [p + c + EOS for p, c in zip(prompts, completions, strict=True)]
    out = []
    for p, toks in zip(prompts, token_logprobs(model, tok, texts, batch_size=batch_size), strict=True):
        out.append(float(sum(lp for s, _, lp in toks if s >= len(p))))
    return out


def pair_logps(model, tok, pairs: Sequence[Mapping[str, str]]) -> tuple[list[float], list[float]]:
    prompts = [p["prompt"] for p in pairs]
    return (completion_logps(model, tok, prompts, [p["chosen"] for p in pairs]),
            completion_logps(model, tok, prompts, [p["rejected"] for p in pairs]))


def dpo_measures(before: tuple[list[float], list[float]], after: tuple[list[float], list[float]], beta: float
                 ) -> dict[str, float]:
    """On the pairs: the sigmoid DPO loss of the trained policy against the initial one (the reference:
    log 2 before training), its implicit reward margin, and the raw log-prob margin chosen - rejected."""
    (c0, r0), (c1, r1) = before, after
    n = max(1, len(c0))
    z = [beta * ((a1 - a0) - (b1 - b0)) for a0, b0, a1, b1 in zip(c0, r0, c1, r1)]
    loss = sum(math.log1p(math.exp(-x)) if x > -30 else -x for x in z) / n
    return {
        "dpo_loss_before": math.log(2.0), "dpo_loss_after": loss,
        "reward_margin_after": sum(z) / n, "reward_accuracy_after": sum(x > 0 for x in z) / n,
        "logp_margin_before": sum(a - b for a, b in zip(c0, r0)) / n,
        "logp_margin_after": sum(a - b for a, b in zip(c1, r1)) / n,
        "logp_chosen_before": sum(c0) / n, "logp_chosen_after": sum(c1) / n,
        "logp_rejected_before": sum(r0) / n, "logp_rejected_after": sum(r1) / n,
        "pairs_preferred_before": sum(a > b for a, b in zip(c0, r0)) / n,
        "pairs_preferred_after": sum(a > b for a, b in zip(c1, r1)) / n,
    }


def run_dpo(init: str | Path, pairs: Sequence[Mapping[str, str]], out: str | Path, spec: DPOSpec, *, seed: int = 0,
            threads: int | None = 1, max_len: int = 512,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """DPO from the zoo checkpoint ``init`` on ``pairs`` into ``out`` (skipped when already done with the
    same spec and pairs); returns what ``dpo.json`` holds."""
    out = Path(out)
    digest = _pairs_digest(pairs)
    want = {"init": str(init), "spec": spec.model_dump(mode="json"), "seed": seed, "pairs": len(pairs),
            "pairs_sha1": digest}
    if is_done(out):
        info = json.loads((out / DONE).read_text())
        if {k: info.get(k) for k in want} != want:
            differ = sorted(k for k in want if info.get(k) != want[k])
            raise ProbeError(f"{out} holds a DPO model of another spec or other pairs ({', '.join(differ)} differ); "
                             "delete it, use a fresh --out directory, or the earlier config to resume")
        return info
    if not pairs:
        raise ProbeError("DPO needs at least one preference pair and none were built (see the probe's pair counts); "
                         "raise the training problems or samples per problem, or choose easier tasks")
    if threads:
        torch.set_num_threads(threads)
    import logging

    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    logging.getLogger("datasets").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()

    model, tok = load_checkpoint(resolve(init))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = pair_logps(model, tok, pairs)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    loss_type = [spec.loss_type] + (["sft"] if spec.sft_weight > 0 else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = DPOConfig(
            output_dir=str(tmp / "trl"), use_cpu=True, per_device_train_batch_size=spec.batch_size,
            max_steps=spec.steps, learning_rate=spec.lr, beta=spec.beta, loss_type=loss_type,
            loss_weights=[1.0, spec.sft_weight] if spec.sft_weight > 0 else None,
            lr_scheduler_type="cosine", warmup_steps=int(spec.warmup * spec.steps), weight_decay=0.0,
            logging_steps=max(1, spec.steps // 20), save_strategy="no", report_to=[], bf16=False, fp16=False,
            gradient_checkpointing=False, seed=seed, data_seed=seed, dataloader_num_workers=0,
            max_length=max_len, disable_tqdm=True, log_level="error",
        )

    class _Progress(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            if progress:
                progress(state.global_step, spec.steps)

    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                              for p in pairs])
    model.train()
    with warnings.catch_warnings():  # transformers 5 deprecation notes about TRL's defaults, not ours
        warnings.simplefilter("ignore", FutureWarning)
        trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_Progress())
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    trained = trainer.model.eval()
    after = pair_logps(trained, tok, pairs)
    state = trained.state_dict()
    delta = math.sqrt(sum(float((state[k].float() - initial[k].float()).pow(2).sum()) for k in initial))
    log = [{k: v for k, v in row.items() if isinstance(v, (int, float))} for row in trainer.state.log_history]
    trained.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(tmp / "trl", ignore_errors=True)
    info = {**want, "wall_s": round(wall, 1), "weight_change_l2": delta,
            "measures": dpo_measures(before, after, spec.beta), "trl_log": log,
            "trl_loss_first": next((r["loss"] for r in log if "loss" in r), None),
            "trl_loss_last": next((r["loss"] for r in reversed(log) if "loss" in r), None)}
    (tmp / DONE).write_text(json.dumps(info, indent=1))
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return info


__all__ = ["DONE", "DPOSpec", "completion_logps", "dpo_measures", "is_done", "pair_logps", "run_dpo"]
