"""``hf``: transformers on CPU or GPU, batched, left-padded, with a dtype choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from verinet.backends.base import (
    Backend, BackendError, Completion, GenerateResult, ScoreResult, TaggedResult, TokenLogprobs, Usage,
    check_sampling, step_tag_id,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, *, dtype: str = "float32", device: str = "auto", batch_size: int = 32,
                 threads: int | None = None, prm: tuple[str, int] | None = None, compile: bool = False) -> None:
        """``prm=(step_tag, valid_label)`` loads the model as a process reward model (a token-classification
        head, scored by :meth:`score_steps`) instead of a causal LM. ``compile`` runs the one-pass scoring
        calls compiled (:meth:`_compile`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise BackendError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {batch_size}")
        if threads:
            torch.set_num_threads(threads)
        self.path = model
        self.device = device
        self.batch_size = batch_size
        p = Path(model)
        self.prm = prm
        if prm is not None:
            self.model, self.tok = _load_prm(model, DTYPES[dtype], device, *prm)
        elif p.is_dir() and (p / "card.json").is_file():  # a zoo checkpoint: load it the checked way
            from verinet.zoo.model import load_checkpoint

            self.model, self.tok = load_checkpoint(p, dtype=DTYPES[dtype], device=device)
        else:
            try:
                self.tok = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
                self.model = AutoModelForCausalLM.from_pretrained(
                    model, dtype=DTYPES[dtype], trust_remote_code=False).to(device).eval()
            except Exception as e:  # transformers raises OSError, ValueError, ... for a bad model dir
                raise BackendError(f"cannot load model {model!r}: {type(e).__name__}: {str(e)[:300]}; give a "
                                   "local model directory or a Hugging Face id available offline") from None
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.dtype = dtype
        self.compiled = False
        if compile:
            if prm is not None:
                raise BackendError("compile is for causal LMs, not process reward models")
            self._compile()

    # ---- generate -------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None) -> GenerateResult:
        check_sampling(n, temperature, top_p, max_tokens)
        if seed is not None:
            torch.manual_seed(seed)
        usage = Usage()
        out: list[list[Completion]] = []
        sample = temperature > 0
        # a model never saw positions past max_position_embeddings (a zoo model's max_len): stop there, as
        # vLLM stops at its max_model_len, instead of decoding on unseen positions
        positions = getattr(self.model.config, "max_position_embeddings", None)
        for i in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[i:i + self.batch_size])
            usage.prefill += int(enc["attention_mask"].sum())
            width = enc["input_ids"].shape[1]
            room = max_tokens if positions is None else min(max_tokens, positions - width)
            if room < 1:
                raise BackendError(f"a prompt of {width} tokens leaves no room to generate in the model's "
                                   f"{positions} positions; shorten it or use a model with a longer context")
            kw: dict[str, Any] = {"do_sample": sample, "max_new_tokens": room, "num_return_sequences": n,
                                  "pad_token_id": self.tok.pad_token_id, "eos_token_id": self.tok.eos_token_id,
                                  **plain_decoding(temperature, top_p)}
            if stop:
                kw.update(stop_strings=stop, tokenizer=self.tok)
            gen = self.model.generate(**enc, **kw)[:, enc["input_ids"].shape[1]:]
            for row_start in range(0, gen.shape[0], n):
                samples = []
                for row in gen[row_start:row_start + n]:
                    c = self._completion(row, stop)
                    usage.decode += c.tokens
                    samples.append(c)
                out.append(samples)
        return GenerateResult(out, usage)

    def _completion(self, row: torch.Tensor, stop: list[str] | None) -> Completion:
        ids = row.tolist()
        eos = self.tok.eos_token_id
        n_tok = next((i + 1 for i, t in enumerate(ids) if t == eos), None)
        if n_tok is not None and stop and self.tok.pad_token_id == eos:
            before = self.tok.decode(ids[:n_tok - 1], skip_special_tokens=True)
            if any(s in before for s in stop):  # stopped on a string: that "eos" is the batch's padding
                n_tok -= 1
        finish = "stop" if n_tok is not None else "length"
        ids = ids[:n_tok] if n_tok is not None else [t for t in ids if t != self.tok.pad_token_id]
        text = self.tok.decode(ids, skip_special_tokens=True)
        for s in stop or []:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Completion(text, len(ids), finish)

    # ---- scoring ----------------------------------------------------------------
    @torch.inference_mode()
    def score(self, prompts: list[str], candidates: list[str]) -> ScoreResult:
        if not candidates:
            raise ValueError("candidates must not be empty")
        cand_ids = [self.tok(c, add_special_tokens=False)["input_ids"] for c in candidates]
        if any(not c for c in cand_ids):
            raise ValueError("every candidate must tokenize to at least one token")
        head = self.model.get_output_embeddings().weight
        usage = Usage()
        if all(len(c) == 1 for c in cand_ids):  # one forward per prompt, read one position, |candidates| rows
            rows = torch.tensor([c[0] for c in cand_ids], device=head.device)
            result: list[list[float]] = []
            for i in range(0, len(prompts), self.batch_size):
                enc = self._encode(prompts[i:i + self.batch_size])
                usage.prefill += int(enc["attention_mask"].sum())
                last = self._hidden(enc)[:, -1]  # left padding: the last position is the prompt's end
                logits = self.model.lm_head(last).float() if _has_bias(self.model) else (last @ head.T).float()
                result += torch.log_softmax(logits, -1)[:, rows].tolist()
            return ScoreResult(result, usage)
        # multi-token candidates: log P(c | prompt) summed over the candidate's positions only
        pairs = [(p, c) for p in prompts for c in cand_ids]
        flat: list[float] = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i:i + self.batch_size]
            p_ids = [self.tok(p, add_special_tokens=False)["input_ids"] for p, _ in chunk]
            seqs = [pi + c for pi, (_, c) in zip(p_ids, chunk)]
            enc = self._pad(seqs)
            usage.prefill += int(enc["attention_mask"].sum())
            hidden = self._hidden(enc)
            width = enc["input_ids"].shape[1]
            for b, (_, c) in enumerate(chunk):
                pos = torch.arange(width - len(c) - 1, width - 1, device=hidden.device)
                h = hidden[b, pos]
                lp = torch.log_softmax((self.model.lm_head(h) if _has_bias(self.model) else h @ head.T).float(), -1)
                flat.append(float(lp[torch.arange(len(c)), torch.tensor(c, device=lp.device)].sum()))
        k = len(candidates)
        return ScoreResult([flat[j:j + k] for j in range(0, len(flat), k)], usage)

    def score_tagged(self, texts: list[str], tag: str, valid: str, invalid: str) -> TaggedResult:
        from verinet.zoo.inference import score_tagged

        try:
            p = score_tagged(self.model, self.tok, texts, batch_size=self.batch_size, tag=tag, valid=valid,
                             invalid=invalid)
        except ValueError as e:
            raise BackendError(f"{self.path}: {e}") from None
        prefill = sum(map(len, self.tok(texts, add_special_tokens=False)["input_ids"])) if texts else 0
        return TaggedResult(p, Usage(prefill=prefill))

    @torch.inference_mode()
    def score_steps(self, texts: list[str]) -> TaggedResult:
        if self.prm is None or self.prm[0] is None:
            return super().score_steps(texts)
        tag, valid_label = self.prm
        tag_id = step_tag_id(self.tok, tag, self.path)  # as the load check and vLLM read it
        out: list[list[float]] = []
        usage = Usage()
        for i in range(0, len(texts), self.batch_size):
            enc = self._encode(texts[i:i + self.batch_size])
            usage.prefill += int(enc["attention_mask"].sum())
            logits = self.model(**enc).logits
            is_tag = enc["input_ids"] == tag_id
            p = torch.softmax(logits[is_tag].float(), dim=-1)[:, valid_label].tolist()
            k = 0
            for c in is_tag.sum(dim=1).tolist():
                out.append(p[k:k + c])
                k += c
        return TaggedResult(out, usage)

    @torch.inference_mode()
    def token_scores(self, texts: list[str]) -> TokenLogprobs:
        if self.prm is None or self.prm[0] is not None:
            return super().token_scores(texts)
        from verinet.zoo.token_prm import valid_logprobs

        offsets, logps = valid_logprobs(self.model, self.tok, texts, batch_size=self.batch_size,
                                        valid_label=self.prm[1])
        out = [[(s, e, v) for (s, e), v in zip(offs, lp.tolist())] for offs, lp in zip(offsets, logps)]
        return TokenLogprobs(out, Usage(prefill=sum(len(o) for o in offsets)))

    def token_logprobs(self, texts: list[str]) -> TokenLogprobs:
        from verinet.zoo.inference import token_logprobs

        toks = token_logprobs(self.model, self.tok, texts, batch_size=self.batch_size)
        return TokenLogprobs(toks, Usage(prefill=sum(len(t) + 1 for t in toks)))

    def info(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.model.parameters())
        emb = self.model.get_input_embeddings().weight.numel()
        out = {"backend": self.name, "model": self.path, "dtype": self.dtype, "device": self.device,
               "compiled": self.compiled, "parameters": n, "non_embedding_parameters": n - emb}
        if self.prm is not None:
            out.update(prm_step_tag=self.prm[0], prm_valid_label=self.prm[1])
        return out

    # ---- helpers ----------------------------------------------------------------
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return self.tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)

    def _pad(self, seqs: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        return {"input_ids": ids, "attention_mask": mask}

    def _compile(self) -> None:
        """Route the decoder's one-pass calls (no KV cache: every scoring path) through ``torch.compile``
        with dynamic shapes; calls that decode with a cache stay eager (generate passes a new set of
        arguments at every step, past dynamo's recompile limit). Warmed up here on the shape families
        scoring usually brings (one text; a padded and an unpadded batch; with and without position
        ids); a rarer shape (a one-token text) compiles on its first call. Dynamo allows 8 compiled
        variants per function, shared by every compiled member of a process: past that, calls run
        eager (a warning in the log), never wrong."""
        from verinet.zoo.inference import encode_left_padded

        inner = getattr(self.model, "model", None)
        if inner is None:
            raise BackendError(f"{self.path}: compile needs a decoder at model.model (a transformers causal LM); "
                               "drop compile: true")
        eager = inner.forward
        compiled = torch.compile(eager, dynamic=True)

        def forward(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("use_cache") is False and kwargs.get("past_key_values") is None:
                return compiled(*args, **kwargs)
            return eager(*args, **kwargs)

        inner.forward = forward
        try:
            with torch.inference_mode():
                for batch in (["1 2 3"], ["1 2", "1 2 3 4"], ["1 2", "3 4"]):
                    ids, mask, pos, _ = encode_left_padded(self.tok, batch, self.device)
                    inner(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                    inner(**self._encode(batch), use_cache=False)
        except Exception as e:  # noqa: BLE001 - Inductor raises many kinds (no C++ compiler, no triton, ...)
            inner.forward = eager
            raise BackendError(f"{self.path}: torch.compile failed ({type(e).__name__}: {str(e)[:300]}); drop "
                               "compile: true, or install what it names (a C++ compiler on CPU, triton on "
                               "GPU)") from None
        self.compiled = True

    def _hidden(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.model(**enc, use_cache=False).last_hidden_state


def _load_prm(model: str, dtype: torch.dtype, device: str, tag: str | None, valid_label: int):
    """A process reward model: a token-classification checkpoint whose tokenizer has ``tag`` as one token
    (no tag: a token-level PRM, read at every token)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        net = AutoModelForTokenClassification.from_pretrained(model, dtype=dtype, trust_remote_code=False)
    except Exception as e:  # transformers raises OSError, ValueError, ... for a bad or unsupported model
        raise BackendError(f"cannot load {model!r} as a process reward model (token classification): "
                           f"{type(e).__name__}: {str(e)[:300]}; models with their own code (Qwen2.5-Math-PRM) "
                           "run on backend vllm, zoo PRMs come from `verinet zoo prm`") from None
    if tag is not None:
        step_tag_id(tok, tag, model)
    if not 0 <= valid_label < net.config.num_labels:
        raise BackendError(f"{model}: valid_label {valid_label} is not one of the head's "
                           f"{net.config.num_labels} classes")
    tok.padding_side = "left"
    return net.to(device).eval(), tok


def plain_decoding(temperature: float, top_p: float) -> dict[str, Any]:
    """generate() options that leave out the checkpoint's own decoding defaults (a generation_config's
    repetition_penalty, top_k), so transformers decodes as vLLM does with explicit SamplingParams."""
    kw: dict[str, Any] = {"repetition_penalty": 1.0}
    if temperature > 0:
        kw.update(temperature=temperature, top_p=top_p, top_k=0)
    return kw


def _has_bias(model) -> bool:
    head = model.get_output_embeddings()
    return getattr(head, "bias", None) is not None
