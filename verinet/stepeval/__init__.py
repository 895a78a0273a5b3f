"""Step-level evaluation of any verifier on ProcessBench-format data (``verinet eval-steps``).

A record is one chain with its label (ProcessBench, arXiv:2412.06559)::

    {"problem": "...", "steps": ["...", "..."], "label": 1, "subset": "gsm8k"}

``label`` is the index of the first wrong step, or -1 when every step is right; ``subset`` is
optional (default ``all``); other keys are kept as they are (``error_kind`` adds AUROC by kind).
A verifier configuration (a serve config, or an ensemble config: one model or several with their
graph) predicts the earliest error of every chain; ProcessBench's metrics come out per subset with
95% intervals that resample problems.
"""

from __future__ import annotations

from verinet.stepeval.data import StepRecord, StepsDataError, family_records, read_records
from verinet.stepeval.metrics import earliest_error_scores, step_auroc

__all__ = ["StepRecord", "StepsDataError", "earliest_error_scores", "family_records", "read_records", "step_auroc"]
