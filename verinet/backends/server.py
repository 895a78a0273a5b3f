"""A small OpenAI-compatible server over any verinet backend (the legacy Completions API).

    >>> with serve(HFBackend(path), "zoo-xs-s0") as srv:   # 127.0.0.1, a free port
    ...     OpenAIBackend(srv.base_url, "zoo-xs-s0").score_tagged(texts, "<v>", "<+>", "<->")

Endpoints, following ``vllm serve``:

* ``GET /v1/models`` — the one served model;
* ``POST /v1/completions`` — ``model``, ``prompt`` (a string, a list of strings, a list of
  token ids or a list of such lists), ``max_tokens`` (16), ``temperature`` (1.0; 0 is
  greedy), ``top_p``, ``n``, ``stop``, ``seed``, ``logprobs`` (top-k per token, 0..20) and
  ``echo``. Choices are ordered prompt-major (index = prompt * n + sample). With ``echo``
  and ``logprobs`` the prompt's tokens come back with their log-probs (the first one
  ``null``), which is how lm-evaluation-harness reads log-likelihoods;
* ``GET /health``.

Log-probs, echo and token-id prompts need a backend that exposes its transformers model
(``hf``: ``.model`` and ``.tok``); any other backend serves plain text generation.
Streaming, ``best_of``, penalties, ``logit_bias`` and ``suffix`` are refused with a 400
rather than silently ignored. Errors have OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``.

This server is not the reference for compatibility: the ``openai`` client is checked against
vLLM's own server (``python -m vllm.entrypoints.openai.api_server``) on a real model in
tests/models/test_smollm2_engines.py. It stays for what vLLM's server cannot do here: serve any
verinet backend (a zoo checkpoint, a transformers model) on an install without vLLM, which is an
optional extra, and start in well under a second instead of about 110 s on two CPU cores — so the
fast suite tests the client offline. Its ``start_in_thread`` also runs ``verinet serve --local``.
"""

from __future__ import annotations

import hmac
import json
import math
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from verinet.backends.base import Backend, BackendError

MAX_LOGPROBS = 20  # as vLLM's default --max-logprobs
MAX_N = 128
LOGPROB_FLOOR = -9999.0  # as vLLM: JSON has no -inf


class APIError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        return _error(self.status, self.message, self.type, self.param, self.code)


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


class CompletionRequest(BaseModel):
    """The body of POST /v1/completions; types are strict (no "1" for 1, no 1.0 for n)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None
    echo: bool = False
    # accepted only at their no-op values
    stream: bool = False
    best_of: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None
    user: str | None = None


@dataclass
class _Sample:
    text: str  # the generated text (stop strings cut, special tokens skipped)
    n_tokens: int
    finish_reason: str
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Prompt:
    text: str
    ids: list[int] | None  # None for backends without a tokenizer we can see
    offsets: list[int] | None = None  # character offset of each token in ``text``


def create_app(backend: Backend, model_name: str, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``backend`` under ``model_name``; with ``api_key``, a Bearer token is required."""
    engine = _Engine(backend)
    app = FastAPI(title="verinet OpenAI-compatible server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind)

    def _check_auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                           type_="authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        try:
            _check_auth(request)
        except APIError as e:
            return e.response()
        created = int(time.time())
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": created, "owned_by": "verinet"}]})

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        try:
            _check_auth(request)
            raw = await request.body()
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise APIError(400, f"the request body is not valid JSON: {e}") from None
            if not isinstance(data, dict):
                raise APIError(400, "the request body must be a JSON object")
            try:
                req = CompletionRequest.model_validate(data)
            except ValidationError as e:
                raise _validation_error(e) from None
            if req.model is not None and req.model != model_name:
                raise APIError(404, f"the model {req.model!r} does not exist; this server serves {[model_name]}",
                               type_="not_found_error", param="model", code="model_not_found")
            _check_values(req)
            body = await run_in_threadpool(engine.complete, req)
        except APIError as e:
            return e.response()
        except ValueError as e:  # the backend refused the parameters
            return _error(400, str(e), "invalid_request_error")
        except BackendError as e:  # the backend failed (e.g. a proxied server is down)
            return _error(500, str(e), "server_error")
        except Exception as e:  # noqa: BLE001 — answer in OpenAI's shape, keep serving
            return _error(500, f"internal error: {type(e).__name__}: {e}", "server_error")
        body["model"] = model_name
        return JSONResponse(body)

    return app


def _validation_error(e: ValidationError) -> APIError:
    errs = e.errors()
    param = str(errs[0]["loc"][0]) if errs and errs[0]["loc"] else None
    if param == "prompt":
        return APIError(400, "prompt must be a string, a list of strings, a list of token ids "
                             "or a list of lists of token ids", param="prompt")
    msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in errs[:5])
    return APIError(400, f"invalid request: {msgs}", param=param)


def _check_values(req: CompletionRequest) -> None:
    """Ranges and unsupported features; each error names its parameter."""
    def bad(param: str, msg: str) -> APIError:
        return APIError(400, f"{param} {msg}", param=param)

    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = getattr(req, name)
        if v is not None and not math.isfinite(v):
            raise bad(name, f"must be a finite number, got {v}")
    if req.prompt == "" or req.prompt == []:
        raise bad("prompt", "must not be empty")
    if isinstance(req.prompt, list) and any(p == "" or p == [] for p in req.prompt):
        raise bad("prompt", "must not contain an empty prompt")
    if req.max_tokens is not None and req.max_tokens < 0:
        raise bad("max_tokens", f"must be >= 0, got {req.max_tokens}")
    if req.temperature is not None and req.temperature < 0:
        raise bad("temperature", f"must be >= 0, got {req.temperature}")
    if req.top_p is not None and not 0 < req.top_p <= 1:
        raise bad("top_p", f"must be in (0, 1], got {req.top_p}")
    if not 1 <= req.n <= MAX_N:
        raise bad("n", f"must be in [1, {MAX_N}], got {req.n}")
    if req.logprobs is not None and not 0 <= req.logprobs <= MAX_LOGPROBS:
        raise bad("logprobs", f"must be in [0, {MAX_LOGPROBS}], got {req.logprobs}")
    if req.stream:
        raise bad("stream", "is not supported by this server; send stream=false")
    if req.best_of is not None and req.best_of != req.n:
        raise bad("best_of", "is not supported by this server (leave it unset or equal to n)")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise bad(name, "is not supported by this server (leave it 0)")
    if req.logit_bias:
        raise bad("logit_bias", "is not supported by this server")
    if req.suffix:
        raise bad("suffix", "is not supported by this server")
    if req.stop == "" or (isinstance(req.stop, list) and any(s == "" for s in req.stop)):
        raise bad("stop", "must not contain empty strings")


class _Engine:
    """Runs completion requests against one backend, one request at a time."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.lock = threading.Lock()
        # a transformers model to read log-probs from (an OpenAI client also has .model, a name, and may have .tok)
        self.hf = callable(getattr(getattr(backend, "model", None), "forward", None)) and \
            getattr(backend, "tok", None) is not None

    # ---- the request ---------------------------------------------------------------
    def complete(self, req: CompletionRequest) -> dict[str, Any]:
        with self.lock:
            return self._complete(req)

    def _complete(self, req: CompletionRequest) -> dict[str, Any]:
        n = req.n
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        temperature = 1.0 if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        stop = [req.stop] if isinstance(req.stop, str) else (list(req.stop) if req.stop else None)
        k = req.logprobs
        if k is not None and not self.hf:
            raise APIError(400, f"logprobs needs a backend that exposes its model (hf); this server runs "
                                f"{self.backend.name!r}", param="logprobs")
        prompts = self._prompts(req.prompt)
        token_prompts = isinstance(req.prompt, list) and isinstance(req.prompt[0], (int, list))
        # greedy decoding gives n identical samples: decode once and repeat (as vLLM answers n > 1 at T=0)
        n_run = 1 if temperature == 0 else n
        prompt_tokens = sum(len(p.ids) for p in prompts) if self.hf else 0
        if max_tokens == 0:
            samples = [[_Sample("", 0, "length")] for _ in prompts]
        elif self.hf and (k is not None or token_prompts):
            samples = self._hf_generate([p.ids for p in prompts], n=n_run, temperature=temperature, top_p=top_p,
                                        max_tokens=max_tokens, stop=stop, seed=req.seed, k=k)
        else:
            res = self.backend.generate([p.text for p in prompts], n=n_run, temperature=temperature, top_p=top_p,
                                        max_tokens=max_tokens, stop=stop, seed=req.seed)
            samples = [[_Sample(c.text, c.tokens, c.finish_reason) for c in group] for group in res.completions]
            if not self.hf:
                prompt_tokens = res.usage.prefill
        if n_run != n:
            samples = [group * n for group in samples]
        echo_lp = None
        if req.echo and k is not None:
            echo_lp = self._hf_prompt_logprobs([p.ids for p in prompts], k)
        choices = []
        for i, (p, group) in enumerate(zip(prompts, samples)):
            for j, s in enumerate(group):
                text = (p.text if req.echo else "") + s.text
                lp = None
                if k is not None:
                    lp = self._logprobs_block(p, s, echo_lp[i] if echo_lp is not None else None,
                                              start=len(p.text) if req.echo else 0)
                choices.append({"index": i * n + j, "text": text, "logprobs": lp, "finish_reason": s.finish_reason})
        completion_tokens = sum(s.n_tokens for group in samples for s in group)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": "", "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def _prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[_Prompt]:
        if isinstance(prompt, str):
            items: list[str | list[int]] = [prompt]
        elif prompt and isinstance(prompt[0], int):
            items = [prompt]  # one prompt of token ids
        else:
            items = list(prompt)
        if not self.hf:
            if any(isinstance(x, list) for x in items):
                raise APIError(400, "token-id prompts need a backend that exposes its tokenizer (hf)",
                               param="prompt")
            return [_Prompt(x, None) for x in items]
        tok = self.backend.tok
        out = []
        for x in items:
            if isinstance(x, str):
                if getattr(tok, "is_fast", False):
                    enc = tok(x, add_special_tokens=False, return_offsets_mapping=True)
                    out.append(_Prompt(x, list(enc["input_ids"]), [a for a, _ in enc["offset_mapping"]]))
                else:
                    ids = tok(x, add_special_tokens=False)["input_ids"]
                    out.append(_Prompt(x, list(ids), _cumulative([self._tok_str(t) for t in ids])))
            else:
                vocab = len(tok)
                if any(not 0 <= t < vocab for t in x):
                    raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
                out.append(_Prompt(tok.decode(x, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                                   list(x), _cumulative([self._tok_str(t) for t in x])))
        return out

    def _tok_str(self, token_id: int) -> str:
        """A token as text, as vLLM returns it (for the zoo's vocabulary: the character or the special)."""
        return self.backend.tok.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _logprobs_block(self, p: _Prompt, s: _Sample, echo: list[tuple[float | None, dict | None]] | None,
                        start: int) -> dict[str, Any]:
        tokens: list[str] = []
        token_logprobs: list[float | None] = []
        top: list[dict[str, float] | None] = []
        offsets: list[int] = []
        if echo is not None:
            tokens += [self._tok_str(t) for t in p.ids]
            token_logprobs += [lp for lp, _ in echo]
            top += [t for _, t in echo]
            offsets += list(p.offsets)
        gen_tokens = [self._tok_str(t) for t in s.ids]
        tokens += gen_tokens
        token_logprobs += s.logprobs
        top += s.tops
        offsets += [start + o for o in _cumulative(gen_tokens)]
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}

    # ---- transformers paths (hf backends) --------------------------------------------
    def _pad(self, seqs: list[list[int]]):
        import torch

        tok = self.backend.tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        width = max(len(s) for s in seqs)
        device = self.backend.model.get_input_embeddings().weight.device
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
        return ids, mask

    def _top(self, lp_row, k: int, chosen: int) -> dict[str, float]:
        """The top-k tokens of one position's log-probs, plus the chosen token (as OpenAI returns them)."""
        import torch

        top: dict[str, float] = {}
        if k > 0:
            vals, idx = torch.topk(lp_row, min(k, lp_row.shape[-1]))
            for v, t in zip(vals.tolist(), idx.tolist()):
                s = self._tok_str(t)
                top[s] = max(top.get(s, LOGPROB_FLOOR), _floor(v))
        s = self._tok_str(chosen)
        top.setdefault(s, _floor(float(lp_row[chosen])))
        return top

    def _hf_prompt_logprobs(self, prompt_ids: list[list[int]], k: int) -> list[list[tuple[float | None, dict | None]]]:
        """log P(token_i | tokens_<i) for every prompt token (None for the first), with top-k alternatives."""
        import torch

        model = self.backend.model
        bs = getattr(self.backend, "batch_size", 8)
        out: list[list[tuple[float | None, dict | None]]] = []
        with torch.inference_mode():
            for i in range(0, len(prompt_ids), bs):
                chunk = prompt_ids[i:i + bs]
                ids, mask = self._pad(chunk)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
                width = ids.shape[1]
                for b, seq in enumerate(chunk):
                    first = width - len(seq)
                    rows: list[tuple[float | None, dict | None]] = [(None, None)]
                    if len(seq) > 1:
                        lp = torch.log_softmax(logits[b, first:width - 1].float(), -1)
                        target = torch.tensor(seq[1:], device=lp.device)
                        chosen = lp[torch.arange(len(seq) - 1, device=lp.device), target].tolist()
                        for t in range(len(seq) - 1):
                            rows.append((_floor(chosen[t]), self._top(lp[t], k, seq[t + 1])))
                    out.append(rows)
        return out

    def _hf_generate(self, prompt_ids: list[list[int]], *, n: int, temperature: float, top_p: float,
                     max_tokens: int, stop: list[str] | None, seed: int | None, k: int | None) -> list[list[_Sample]]:
        """Generation as HFBackend.generate does it (same batching and decoding), plus per-token log-probs."""
        import torch

        from verinet.backends.hf import plain_decoding

        model, tok = self.backend.model, self.backend.tok
        bs = getattr(self.backend, "batch_size", 8)
        sample = temperature > 0
        if seed is not None:
            torch.manual_seed(seed)
        out: list[list[_Sample]] = []
        with torch.inference_mode():
            for i in range(0, len(prompt_ids), bs):
                ids, mask = self._pad(prompt_ids[i:i + bs])
                kw: dict[str, Any] = {"do_sample": sample, "max_new_tokens": max_tokens, "num_return_sequences": n,
                                      "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                                      "return_dict_in_generate": True, "output_logits": k is not None,
                                      **plain_decoding(temperature, top_p)}
                if stop:
                    kw.update(stop_strings=stop, tokenizer=tok)
                res = model.generate(input_ids=ids, attention_mask=mask, **kw)
                gen = res.sequences[:, ids.shape[1]:].tolist()
                keep = [self._kept(row) for row in gen]
                lps: list[list[float]] = [[] for _ in gen]
                tops: list[list[dict[str, float]]] = [[] for _ in gen]
                if k is not None:
                    for step, step_logits in enumerate(res.logits):
                        lp = torch.log_softmax(step_logits.float(), -1)
                        for r, (row_ids, positions) in enumerate(keep):
                            if step in positions:
                                t = gen[r][step]
                                lps[r].append(_floor(float(lp[r, t])))
                                tops[r].append(self._top(lp[r], k, t))
                for row_start in range(0, len(gen), n):
                    group = []
                    for r in range(row_start, row_start + n):
                        row_ids, _ = keep[r]
                        group.append(self._sample(row_ids, lps[r], tops[r], max_tokens, stop))
                    out.append(group)
        return out

    def _kept(self, row: list[int]) -> tuple[list[int], set[int]]:
        """The generated tokens HFBackend counts: up to and including eos, else all but padding."""
        tok = self.backend.tok
        eos = tok.eos_token_id
        n_tok = next((i + 1 for i, t in enumerate(row) if t == eos), None)
        if n_tok is not None:
            return row[:n_tok], set(range(n_tok))
        positions = [i for i, t in enumerate(row) if t != tok.pad_token_id]
        return [row[i] for i in positions], set(positions)

    def _sample(self, ids: list[int], lps: list[float], tops: list[dict[str, float]], max_tokens: int,
                stop: list[str] | None) -> _Sample:
        eos = self.backend.tok.eos_token_id
        finish = "stop" if ids and ids[-1] == eos else "length"
        text = self.backend.tok.decode(ids, skip_special_tokens=True)
        for s in stop or []:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        finish = finish if len(ids) < max_tokens or finish == "stop" else "length"
        return _Sample(text, len(ids), finish, ids, lps, tops)


def _floor(x: float) -> float:
    return max(x, LOGPROB_FLOOR) if not math.isnan(x) else LOGPROB_FLOOR


def _cumulative(pieces: list[str]) -> list[int]:
    offs, at = [], 0
    for p in pieces:
        offs.append(at)
        at += len(p)
    return offs


# ---- running it ------------------------------------------------------------------------
class ServerHandle:
    """A server running in a background thread; a context manager that stops it on exit."""

    def __init__(self, server, thread: threading.Thread, sock: socket.socket, host: str, port: int,
                 app: FastAPI) -> None:
        self._server, self._thread, self._sock = server, thread, sock
        self.host, self.port, self.app = host, port, app

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What OpenAI clients take as base_url: ``http://HOST:PORT/v1``."""
        return f"{self.url}/v1"

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(app: Any, host: str, port: int, *, lifespan: str = "off", log_level: str = "warning",
                    startup_timeout_s: float = 30.0) -> tuple[Any, threading.Thread, socket.socket, int]:
    """uvicorn serving ``app`` from a daemon thread on ``host:port`` (port 0: a free one).

    Returns (server, thread, listening socket, bound port). Raises OSError when the address
    cannot be bound and TimeoutError when the server does not start in time.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e}; choose another port (0 picks a free one)") from None
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan=lifespan, access_log=False,
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"verinet-serve-{bound}")
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise TimeoutError(f"the server on {host}:{bound} did not start within {startup_timeout_s:g}s")
        time.sleep(0.01)
    return server, thread, sock, bound


def serve(backend: Backend, model_name: str, host: str = "127.0.0.1", port: int = 0, *,
          api_key: str | None = None, log_level: str = "warning", startup_timeout_s: float = 30.0) -> ServerHandle:
    """Start the server in a background thread on ``host:port`` (port 0: a free one) and return its handle."""
    app = create_app(backend, model_name, api_key=api_key)
    try:
        server, thread, sock, bound = start_in_thread(app, host, port, log_level=log_level,
                                                      startup_timeout_s=startup_timeout_s)
    except OSError as e:  # TimeoutError included
        raise BackendError(str(e)) from None
    return ServerHandle(server, thread, sock, host, bound, app)
