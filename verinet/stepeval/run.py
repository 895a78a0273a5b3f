"""Run a verifier configuration over labelled chains and score its earliest-error predictions.

The verifier is the endpoint's engine run in this process (no Ray, no HTTP): the same members,
topology, aggregation, threshold and graph that ``verinet serve`` would use, so a number measured
here is what the endpoint gives. A config is a serve config (``ensemble: ...``) or an ensemble
config (``members: [...]``, with the serve defaults: all_pairs, mean, threshold 0.5).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from verinet.stepeval.data import StepRecord
from verinet.stepeval.metrics import earliest_error_scores, step_auroc

LONG_S = 86_400.0  # an evaluation waits for slow members rather than counting them as missing


class EvalConfigError(ValueError):
    """A verifier config that cannot be used; the message names the file and the field."""


def load_verifier_config(path: str | Path, *, threshold: float | None = None):
    """A ServeConfig from a serve config or an ensemble config, with timeouts an offline run needs."""
    from verinet.backends.config import EnsembleConfigError, load_ensemble_config
    from verinet.schema import resolve_config_path
    from verinet.serve.config import ServeConfig, ServeConfigError, load_serve_config

    p = resolve_config_path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) if p.is_file() else None
    except yaml.YAMLError as e:
        raise EvalConfigError(f"{p}: not valid YAML: {e}") from None
    try:
        if isinstance(data, dict) and "ensemble" in data:
            cfg = load_serve_config(p)
        elif isinstance(data, dict) and "members" in data:
            cfg = ServeConfig(ensemble=load_ensemble_config(p))
        else:
            raise EvalConfigError(f"{p}: not a serve config (with 'ensemble') or an ensemble config (with "
                                  "'members'); see configs/serve-smollm2.yaml or configs/ensemble-local.yaml")
    except (EnsembleConfigError, ServeConfigError) as e:
        raise EvalConfigError(str(e)) from None
    update: dict[str, Any] = {"timeout_s": 3600.0, "member_timeout_s": 3600.0,
                              "limits": cfg.limits.model_copy(update={"max_chars": 10_000_000})}
    if threshold is not None:
        update["defaults"] = cfg.defaults.model_copy(update={"threshold": threshold})
    return cfg.model_copy(update=update)


def predict(cfg, records: Sequence[StepRecord], *, chain_format: str = "text", batch: int = 16,
            progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Per record: the predicted earliest error and every step's posterior P(valid)."""
    from verinet.serve.api import VerifyRequest
    from verinet.serve.local import local_engine

    engine = local_engine(cfg)
    out: list[dict[str, Any]] = []
    try:
        for i in range(0, len(records), batch):
            chunk = records[i:i + batch]
            reqs = [VerifyRequest(id=r.id, question=r.problem, steps=[" ".join(s.split()) for s in r.steps],
                                  format=chain_format, include_graph=False) for r in chunk]
            responses = asyncio.run(engine.verify_many(reqs, batch=True))
            for r, resp in zip(chunk, responses):
                out.append({"id": r.id, "subset": r.subset, "label": r.label, "error_kind": r.error_kind,
                            "predicted": resp.earliest_error, "p_valid": [s.p_valid for s in resp.steps]})
            if progress:
                progress(len(chunk))
    finally:
        for m in getattr(engine, "members", {}).values():
            close = getattr(getattr(getattr(m, "scorer", None), "backend", None), "close", None)
            if close:
                close()
    return out


def score(records: Sequence[StepRecord], predictions: Sequence[dict[str, Any]], *, n_boot: int = 1000,
          seed: int = 0) -> dict[str, Any]:
    """ProcessBench metrics per subset (and over all records), and step AUROC by error kind where
    records name one: P(valid) at the labelled step of erroneous chains against every step of correct
    chains of the same subset."""
    subsets: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        subsets[r.subset].append(i)
    scopes = dict(subsets)
    if len(subsets) > 1:
        scopes["all"] = list(range(len(records)))
    result: dict[str, Any] = {}
    for name, idx in scopes.items():
        fig = earliest_error_scores([records[i].label for i in idx], [predictions[i]["predicted"] for i in idx],
                                    [records[i].problem for i in idx], n_boot=n_boot, seed=seed)
        gold = [p for i in idx if records[i].label < 0 for p in predictions[i]["p_valid"]]
        by_kind: dict[str, list[float]] = defaultdict(list)
        for i in idx:
            r = records[i]
            if r.label >= 0 and r.error_kind:
                by_kind[r.error_kind].append(predictions[i]["p_valid"][r.label])
        if by_kind:
            fig["step_auroc"] = {k: step_auroc(v, gold) for k, v in sorted(by_kind.items())}
        result[name] = fig
    return result
