"""Ensemble configs: the shipped ones load and plan; broken ones are clear EnsembleConfigErrors.

No Ray here: loading and planning are pure.
"""

from pathlib import Path

import pytest

from verinet.backends import EnsembleConfig, EnsembleConfigError, load_ensemble_config
from verinet.cluster import plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "ens.yaml"
    p.write_text(text)
    return p


def test_local_config_is_three_cpu_zoo_members_with_quorum_2():
    cfg = load_ensemble_config(CONFIGS / "ensemble-local.yaml", check_models=False)
    assert [m.name for m in cfg.members] == ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"]
    assert cfg.quorum == 2
    assert all(m.backend == "hf" and m.format == "zoo" and m.resources.num_gpus == 0 for m in cfg.members)
    p = plan(cfg, {"CPU": 2.0})  # fits a 2-core laptop
    assert p.gpus == 0 and p.cpus <= 2


def test_gpu_configs_load_without_models_and_share_one_gpu():
    ens = load_ensemble_config(CONFIGS / "ensemble-gpu.yaml", check_models=False)
    base = load_ensemble_config(CONFIGS / "baseline-gpu.yaml", check_models=False)
    assert len(ens.members) == 4
    assert all(m.backend == "vllm" and m.format == "chat" and m.dtype == "bfloat16"
               and m.model == "Qwen/Qwen2.5-0.5B-Instruct" and m.resources.num_gpus == 0.25
               and m.gpu_memory_utilization <= 0.25 for m in ens.members)
    (big,) = base.members
    assert big.model == "Qwen/Qwen2.5-7B-Instruct" and big.resources.tensor_parallel_size == 2
    p = plan(EnsembleConfig(members=ens.members + base.members), {"CPU": 4.0, "GPU": 4.0})
    shared = p.shared_gpus()
    small_slots = {s for s, names in shared.items() if set(names) == {m.name for m in ens.members}}
    assert len(small_slots) == 1  # the four 0.25 members fill one GPU
    assert p["qwen7b"].bundles == ({"GPU": 1.0, "CPU": 1.0}, {"GPU": 1.0})
    assert p["qwen7b"].strategy == "STRICT_PACK" and p["qwen7b"].num_gpus == 0
    assert p.gpus == 3


def test_unknown_backend_is_a_clear_error(tmp_path):
    p = _write(tmp_path, "members:\n  - {name: a, backend: tgi, model: zoo-xs-s0}\n")
    with pytest.raises(EnsembleConfigError, match=r"backend.*(hf|vllm|openai)"):
        load_ensemble_config(p)


def test_missing_model_path_is_a_clear_error(tmp_path):
    p = _write(tmp_path, f"members:\n  - {{name: a, backend: hf, model: {tmp_path / 'nope'}}}\n")
    with pytest.raises(EnsembleConfigError, match=r"member a: model .*nope.* is not a directory, a zoo name"):
        load_ensemble_config(p)


def test_quorum_above_members_is_a_clear_error(tmp_path):
    p = _write(tmp_path, "quorum: 3\nmembers:\n  - {name: a, backend: hf, model: zoo-xs-s0}\n"
                         "  - {name: b, backend: hf, model: zoo-xs-s0}\n")
    with pytest.raises(EnsembleConfigError, match="quorum 3 is more than the 2 members"):
        load_ensemble_config(p, check_models=False)
