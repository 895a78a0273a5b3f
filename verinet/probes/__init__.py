"""Probes: research jobs that train or prompt models under controlled conditions and measure faithfulness.

``verinet probe list`` names them; ``verinet probe NAME --config configs/probes/NAME.yaml`` runs one
(resumable; ``--smoke`` runs it at a size that takes well under a minute). Each probe lives in its own
module, which defines ``PROBE`` (a :class:`~verinet.probes.runner.Probe`).
"""

from __future__ import annotations

import importlib

from verinet.probes.config import ProbeConfig, ProbeError, load_probe_config
from verinet.probes.runner import Probe, ProbeRun, run_probe

# name -> module; imported on use, so `verinet probe list` stays fast
MODULES: dict[str, str] = {
    "regime": "verinet.probes.regime",
    "distill": "verinet.probes.distill",
    "process-reward": "verinet.probes.process_reward",
    "finetune-real": "verinet.probes.finetune_real",
    "semantics": "verinet.probes.semantics",
    "length": "verinet.probes.length",
    "tools": "verinet.probes.tools",
    "novelty": "verinet.probes.novelty",
}


def get_probe(name: str) -> Probe:
    if name not in MODULES:
        raise ProbeError(f"no probe {name!r}; probes: {', '.join(sorted(MODULES))} (see `verinet probe list`)")
    return importlib.import_module(MODULES[name]).PROBE


__all__ = ["MODULES", "Probe", "ProbeConfig", "ProbeError", "ProbeRun", "get_probe", "load_probe_config",
           "run_probe"]
