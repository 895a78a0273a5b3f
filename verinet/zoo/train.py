"""Supervised training of a zoo model: a plain torch loop, deterministic and resumable.

The loop is deliberately small (nanoGPT-style): at these sizes transformers' Trainer
costs more in overhead than the model costs in compute. Batches are a pure function of
(seed, step) (see data.py), the model has no dropout, and the optimizer and schedule
state are checkpointed, so an interrupted run resumes on the same trajectory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from transformers import get_cosine_schedule_with_warmup

from verinet.signals import stop_requests
from verinet.zoo.config import ZooConfig, ZooError
from verinet.zoo.data import IGNORE, ExampleBuilder, collate
from verinet.zoo.model import build_model, count_parameters
from verinet.zoo.tokenizer import build_tokenizer

STATE_DIR = "train_state"


@dataclass
class TrainResult:
    steps: int
    tokens: int
    wall_s: float
    final_loss: float
    losses: list[float]  # mean loss of each logged window
    device: str
    stopped_by: str | None = None  # why an unfinished run stopped: "deadline", "SIGTERM" or "SIGINT"


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return choice


def example_weighted_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over examples of each example's mean token loss, so a verify example (a few
    verdict tokens) weighs as much as a solve example (a whole chain)."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE,
                                reduction="none")
    counts = (targets != IGNORE).sum(dim=1).clamp(min=1)
    return (per_token.sum(dim=1) / counts).mean()


def _optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=False)


class _StepBatches(torch.utils.data.Dataset):
    """Batch ``k`` of a run, collated: a pure function of ``k``, so any worker may build it."""

    def __init__(self, builder: ExampleBuilder, pad_id: int) -> None:
        self.builder, self.pad_id = builder, pad_id

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        return collate(self.builder.batch(step), self.pad_id)


def _ignore_stop_signals(_worker_id: int) -> None:
    """Batch workers leave Ctrl-C and a group-wide SIGTERM to the training process, which saves before it
    stops (torch's watchdog ends a worker whose parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _batches(builder: ExampleBuilder, pad_id: int, first: int, last: int, workers: int):
    """Batches ``first .. last - 1`` in order; with ``workers`` > 0 built ahead by that many processes
    (a small model on a GPU trains faster than one core builds its batches)."""
    if workers <= 0:
        return (collate(builder.batch(k), pad_id) for k in range(first, last))
    return iter(torch.utils.data.DataLoader(_StepBatches(builder, pad_id), batch_size=None,
                                            sampler=range(first, last), num_workers=workers, prefetch_factor=8,
                                            worker_init_fn=_ignore_stop_signals))


def train(config: ZooConfig, out_dir: str | Path, *, stop_after: int | None = None,
          on_step: Callable[[int, float, float], None] | None = None,
          builder: Callable[[ZooConfig, object], ExampleBuilder] | None = None,
          loader_workers: int = 0, deadline: float | None = None, stop_on_signals: bool = False) -> TrainResult:
    """Train (or resume) ``config`` into ``out_dir``; returns what happened.

    ``stop_after`` ends the run early after that many steps of this call (used to test
    resumption); ``on_step(step, loss, tokens_per_s)`` is called after each step.
    ``builder(config, tokenizer)`` replaces the default :class:`ExampleBuilder` (the probes train
    on other chain formats or on another model's chains); its ``batch(step)`` must stay a pure
    function of the step, or a resumed run leaves the trajectory. ``loader_workers`` processes build
    the batches ahead (the same batches: the trajectory does not change). At ``deadline`` (a
    ``time.time()`` value), and with ``stop_on_signals`` on SIGTERM or SIGINT while it trains, the run
    saves its state after the current step and stops (``stopped_by`` says why); called again, it
    resumes. Only a command that owns the process should catch its signals: callers that train
    several models in a row would otherwise go on to the next one.
    """
    tc = config.training
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finished = read_training_info(out)
    if finished is not None:
        if finished["config"] != config.model_dump(mode="json"):
            raise ZooError(f"{out} holds a model trained with another config; choose another output "
                           "directory or delete it to retrain")
        return TrainResult(finished["steps"], finished["tokens"], finished["wall_s"],
                           finished["losses"][-1], finished["losses"], finished["device"])
    device = resolve_device(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    tok = build_tokenizer()
    builder = (builder or ExampleBuilder)(config, tok)
    model = build_model(config.size, tok, tc.seed)
    if tc.init_from:
        _init_weights(model, tc.init_from)
    model = model.to(device)
    opt = _optimizer(model, tc)
    sched = get_cosine_schedule_with_warmup(opt, int(tc.warmup * tc.steps), tc.steps)
    state = {"step": 0, "tokens": 0, "wall_s": 0.0, "losses": []}
    state_dir = out / STATE_DIR
    recover_interrupted_save(state_dir)
    if (state_dir / "state.json").is_file():
        state = json.loads((state_dir / "state.json").read_text())
        load_model(model, str(state_dir / "model.safetensors"), device=device)
        saved = torch.load(state_dir / "optim.pt", map_location=device, weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
    # what the base was trained on, read once with its weights and kept in the resumable state: the base
    # may be retrained before this run ends (a state saved before runs recorded it reads it now)
    state.setdefault("continued_from", _base_record(tc.init_from))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" and tc.dtype == "bfloat16" \
        else torch.autocast("cpu", enabled=False)
    model.train()
    window: list[float] = state.pop("window", [])  # a run stopped between checkpoints kept its partial window
    t_start = time.perf_counter() - state["wall_s"]
    last = tc.steps if stop_after is None else min(tc.steps, state["step"] + stop_after)
    batches = _batches(builder, tok.pad_token_id, state["step"], last, loader_workers)
    with stop_requests(stop_on_signals, second_sigint_interrupts=True) as signals:  # from here on a signal loses nothing
        t0 = time.perf_counter()
        stopped_by = None
        for cpu_batch in batches:
            batch = {k: v.to(device) for k, v in cpu_batch.items()}
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = example_weighted_loss(logits, batch["targets"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            n_tok = int(batch["attention_mask"].sum())
            state["step"] += 1
            state["tokens"] += n_tok
            loss_value = loss.item()
            window.append(loss_value)
            if on_step:
                on_step(state["step"], loss_value, n_tok / max(time.perf_counter() - t0, 1e-9))
            stopped_by = "deadline" if deadline is not None and time.time() >= deadline \
                else signals[0] if signals else None
            out_of_time = stopped_by is not None
            at_checkpoint = state["step"] % tc.checkpoint_every == 0 or state["step"] == tc.steps
            if at_checkpoint:
                state["losses"].append(sum(window) / len(window))
                window = []
            if at_checkpoint or out_of_time:
                state["wall_s"] = time.perf_counter() - t_start
                _save_state(state_dir, model, opt, sched, {**state, "window": window})
            if out_of_time:
                break
            t0 = time.perf_counter()
        state["wall_s"] = time.perf_counter() - t_start
        if state["step"] >= tc.steps:
            model.eval()
            model.save_pretrained(out, safe_serialization=True)
            tok.save_pretrained(out)
            for f in out.iterdir():  # on disk before training.json says the run is finished
                if f.is_file():
                    _fsync(f)
            _fsync(out)
            _write_atomically(out / "training.json", json.dumps({
                "config": config.model_dump(mode="json"),
                "parameters": count_parameters(model),
                "steps": state["step"], "tokens": state["tokens"], "wall_s": round(state["wall_s"], 1),
                "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "losses": state["losses"],
                "continued_from": state.get("continued_from"),
            }, indent=2))
            shutil.rmtree(state_dir, ignore_errors=True)
    losses = state["losses"] + ([sum(window) / len(window)] if window else [])
    return TrainResult(state["step"], state["tokens"], state["wall_s"], losses[-1] if losses else float("nan"),
                       losses, device, None if state["step"] >= tc.steps else stopped_by)


def _init_weights(model: torch.nn.Module, init_from: str) -> None:
    """Start from a trained checkpoint's weights (fine-tuning); the sizes must match."""
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    base, _ = load_checkpoint(resolve(init_from))
    theirs, ours = base.state_dict(), model.state_dict()
    wrong = sorted(k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape)
    if wrong:
        raise ZooError(f"training.init_from: {init_from} has another size than this config's size "
                       f"(first differing weight: {wrong[0]}); set size to the checkpoint's (see its config.json)")
    model.load_state_dict({k: theirs[k] for k in ours})


def _base_record(init_from: str | None) -> dict | None:
    """What the checkpoint a run continued from was trained on (its own record, phases included), so that
    a continued checkpoint's card states every phase; None without a base or a base's training record."""
    from verinet.zoo.registry import resolve

    info = read_training_info(resolve(init_from)) if init_from else None
    if info is None:
        return None
    return {k: info.get(k) for k in ("config", "steps", "tokens", "wall_s", "device", "continued_from")}


def training_phases(info: dict) -> list[dict]:
    """The phases of a training record, first first: each with its config, steps, tokens, wall_s and
    ``start`` (the checkpoint its weights started from; None for a phase trained from scratch)."""
    phases = []
    while info:
        phases.append({**info, "start": info["config"]["training"].get("init_from")})
        info = info.get("continued_from")
    return phases[::-1]


def run_identity(info: dict) -> tuple[int, int, float]:
    """(steps, tokens, wall seconds) of all of a record's phases: what tells one training run from another."""
    phases = training_phases(info)
    return (sum(ph["steps"] for ph in phases), sum(ph["tokens"] for ph in phases),
            round(sum(ph["wall_s"] for ph in phases), 1))


def read_training_info(out: Path) -> dict | None:
    """The record a finished run leaves next to its weights, or None if the run is not finished."""
    f = out / "training.json"
    if not f.is_file() or not (out / "model.safetensors").is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        raise ZooError(f"{f} is corrupt; delete {out} and retrain") from None


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk: a rename is only as durable as what it renames
    and the directory that records it (a machine crash could otherwise leave an empty state.json)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def recover_interrupted_save(state_dir: Path) -> None:
    """A save killed between its two renames leaves no ``train_state``, but a complete ``.tmp`` (the new
    state: state.json is written last) and the previous state as ``.old``: take the newest complete one."""
    if state_dir.exists():
        return
    for cand in (state_dir.with_name(state_dir.name + ".tmp"), state_dir.with_name(state_dir.name + ".old")):
        try:
            json.loads((cand / "state.json").read_text())
        except (OSError, ValueError):
            continue
        os.replace(cand, state_dir)
        return


def _save_state(state_dir: Path, model, opt, sched, state: dict) -> None:
    """Write the resumable state atomically: a crash mid-save leaves the previous one intact."""
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    for f in ("model.safetensors", "optim.pt", "state.json", "."):
        _fsync(tmp / f)
    old = state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        os.replace(state_dir, old)
    os.replace(tmp, state_dir)
    _fsync(state_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["TrainResult", "read_training_info", "recover_interrupted_save", "train", "training_phases"]
