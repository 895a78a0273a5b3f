"""benchmarks/gpu.py: the dry-run plan (shapes, counts, paths, runs) and, on this CPU, the real
measuring loop end to end with tiny shapes through the hf engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

# Qwen2.5-*-Instruct as published: (hidden, layers, heads, kv heads, intermediate, tied) in config.json,
# and the model cards' "Number of Parameters" and "Number of Non-Embedding Parameters" in billions.
PUBLISHED = {
    "0.5b": ((896, 24, 14, 2, 4864, True), 0.49, 0.36),
    "1.5b": ((1536, 28, 12, 2, 8960, True), 1.54, 1.31),
    "7b": ((3584, 28, 28, 4, 18944, False), 7.61, 6.53),
}


def run(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    out = Path(args[args.index("--out") + 1])
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-dry")
    return run("--dry-run", "--workdir", str(tmp / "models"), "--out", str(tmp / "plan.json"), timeout=120) + (tmp,)


def test_dry_run_plans_the_published_shapes_and_writes_no_weights(dry):
    proc, data, tmp = dry
    assert data["mode"] == "dry-run" and data["rows"] == [] and data["peak"] is None
    assert not (tmp / "models").exists(), "a dry run must not build checkpoints"
    models = data["plan"]["models"]
    assert list(models) == ["0.5b", "1.5b", "7b"]
    for size, (shape, total, body) in PUBLISHED.items():
        m, s = models[size], models[size]["shape"]
        assert (s["hidden"], s["layers"], s["heads"], s["kv_heads"], s["intermediate"], s["tied_embeddings"]) == shape
        assert s["vocab"] == 151936 and s["head_dim"] == s["hidden"] // s["heads"]
        assert round(m["parameters"] / 1e9, 2) == total, (size, m["parameters"])
        assert round(m["body"] / 1e9, 2) == body, (size, m["body"])  # the cards leave out embedding and head
    assert models["0.5b"]["parameters"] == 494_032_768  # the count transformers gives the model built on meta
    assert round(models["0.5b"]["non_embedding"] / 1e8, 2) == 3.58  # configs/compare-gpu.yaml's cost table
    assert models["7b"]["bytes_bf16"] == 2 * models["7b"]["parameters"]
    assert data["plan"]["device"] == "cuda" and data["plan"]["engines"] == ["hf", "vllm"]


def test_dry_run_counts_tokens_per_path(dry):
    _, data, _ = dry
    plan = data["plan"]
    paths = plan["paths"]
    assert set(paths) == {"likelihood", "verdict", "tagged", "prm_pool"}
    w = plan["workload"]
    assert w["problems"] == 64 and w["chains"] > w["problems"] and w["verdicts"] > w["chains"]
    assert paths["likelihood"]["method"] == "token_logprobs" and paths["likelihood"]["requests"] == w["chains"]
    assert paths["tagged"]["method"] == "score_tagged" and paths["tagged"]["requests"] == w["chains"]
    assert paths["verdict"]["method"] == "score" and paths["verdict"]["requests"] == w["verdicts"]
    for p in paths.values():
        assert p["prompt_tokens"] > 0
    # per-step prompts repeat their chain's prefix: a prefix cache computes far fewer tokens
    assert paths["verdict"]["unique_prefix_tokens"] < paths["verdict"]["prompt_tokens"] / 2
    assert plan["tokenizer"]["size"] < 151936


def test_dry_run_plans_both_engines_and_the_ensemble_comparison(dry):
    proc, data, _ = dry
    runs = {(r["engine"], r["size"]): r for r in data["plan"]["runs"]}
    assert set(runs) == {(e, s) for e in ("hf", "vllm") for s in ("0.5b", "1.5b", "7b")}
    ens = runs[("vllm", "0.5b")]
    assert ens["members"] == 4 and ens["concurrent_paths"] == ["likelihood", "verdict"]
    assert [s["resources"]["num_gpus"] for s in ens["specs"]] == [0.25] * 4
    assert {s["gpu_memory_utilization"] for s in ens["specs"]} == {0.2}
    assert all(s["backend"] == "vllm" and s["format"] == "chat" and s["dtype"] == "bfloat16" for s in ens["specs"])
    assert "prm_pool" in ens["paths"] and "prm_pool" in runs[("vllm", "7b")]["paths"]
    assert "prm_pool" not in runs[("hf", "0.5b")]["paths"]
    assert runs[("hf", "7b")]["members"] == 1 and runs[("hf", "7b")]["batch_size"] == 64
    assert data["plan"]["comparison"]["ensemble"] == "4 x 0.5b" and data["plan"]["comparison"]["single"] == "7b"
    whats = {u["what"] for u in data["unmeasured"]}
    assert "everything" in whats and "hf prm_pool" in whats
    out = proc.stdout
    for needle in ("dry run", "151936", "token_logprobs", "after prefix sharing", "would measure", "4 x 0.5b"):
        assert needle in out, needle


def test_tiny_cpu_run_measures_every_path_and_the_comparison(tmp_path):
    proc, data = run("--device", "cpu", "--tiny", "--problems", "1", "--sizes", "0.5b", "7b",
                     "--workdir", str(tmp_path / "models"), "--out", str(tmp_path / "tiny.json"), timeout=300)
    assert data["mode"] == "run" and data["peak"]["flop_per_s"] > 0 and data["peak"]["dtype"] == "float32"
    rows = data["rows"]
    single = {(r["size"], r["path"]) for r in rows if r["members"] == 1}
    assert single == {(s, p) for s in ("0.5b", "7b") for p in ("likelihood", "verdict", "tagged")}
    assert {r["path"] for r in rows if r["members"] == 4} == {"likelihood", "verdict"}
    for r in rows:
        assert r["engine"] == "hf" and r["seconds"] > 0 and r["tokens_per_s"] > 0 and 0 < r["peak_fraction"] < 5
        assert r["tokenizer_matches_plan"] and r["parameters_match_plan"]
        assert r["computed_tokens"] == r["prompt_tokens"]  # hf has no prefix cache
    [lik] = [c for c in data["comparison"] if c["path"] == "likelihood"]
    assert lik["engine"] == "hf" and lik["ensemble_gpu_ms_per_verdict"] > 0 and lik["cost_ratio_ensemble_over_single"] > 0
    assert (tmp_path / "models" / "tiny-7b" / "tokenizer.json").is_file()
    assert "4 x 0.5b (one GPU, concurrent) vs 1 x 7b" in proc.stdout
