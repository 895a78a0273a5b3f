"""``openai``: any OpenAI-compatible server (``vllm serve``, Ray Serve LLM, ``verinet.backends.server``).

Only the legacy ``/v1/completions`` endpoint is used, because it is the one that returns
log-probs of prompt tokens (``echo``) and top-k next-token log-probs (``logprobs``):

* ``generate`` sends up to ``batch_size`` prompts per request, with ``logprobs=0`` so every
  choice says how many tokens it generated (a server that refuses log-probs is asked
  again without them, and the usage's completion tokens are shared out by text length);
* ``score`` reads single-token candidates from the top-k log-probs of one generated
  token (``max_tokens=1, temperature=0, logprobs=K``); a candidate that is not among
  them, or has several tokens, is scored by echo: prompt + candidate is sent with
  ``echo=true, max_tokens=0`` (1 if the server refuses 0) and the log-probs of the tokens
  whose ``text_offset`` lies inside the candidate are summed;
* ``score_tagged`` is emulated: every prefix of a text that ends with the tag is a prompt
  whose next-token log-probs of ``valid`` and ``invalid`` give P(valid).

The client never retries (the ensemble does) and does not contact the server until the
first call; ``health()`` checks that the server is up and serves the model.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

from verinet.backends.base import (
    Backend, BackendError, Completion, GenerateResult, ScoreResult, TaggedResult, TokenLogprobs, Usage,
    check_sampling,
)

MAX_TOP_LOGPROBS = 20  # what vLLM serves by default (--max-logprobs)
MIN_TOP_LOGPROBS = 5  # a little slack so near-top candidates need no echo fallback


class _HTTPError(BackendError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, status: int, server_message: str) -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, timeout_s: float = 120,
                 batch_size: int = 32, tokenizer: str | None = None) -> None:
        if not base_url:
            raise BackendError("base_url is empty; give the server's URL, e.g. http://127.0.0.1:8000/v1")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BackendError(f"base_url {base_url!r} must be an http(s) URL such as http://127.0.0.1:8000/v1")
        base = base_url.rstrip("/")
        if parts.path in ("", "/"):
            base += "/v1"  # a bare host:port means the usual /v1 prefix
        if not model:
            raise BackendError("model is empty; give the name the server serves (see GET /v1/models)")
        if batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {batch_size}")
        if timeout_s <= 0:
            raise BackendError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base
        self.model = model
        self.timeout_s = float(timeout_s)
        self.batch_size = batch_size
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise BackendError(f"the API key for {base} is read from the environment variable {api_key_env}, "
                                   f"which is not set; export {api_key_env}=<key>")
            self._headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()
        self._echo_max_tokens = 0  # becomes 1 if the server refuses max_tokens=0 with echo
        self._generate_logprobs = True  # becomes False if the server refuses logprobs=0 on generation
        self._multi_token: set[str] = set()  # candidates seen to take several tokens: skip the top-k try
        self._tokenizer_path = tokenizer
        self._tok = None

    @property
    def tok(self):
        """The served model's tokenizer, loaded on first use from the local directory given as ``tokenizer``
        (the chat format renders prompts with its chat template); None when none was given."""
        if self._tok is None and self._tokenizer_path is not None:
            from transformers import AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(self._tokenizer_path)
            except Exception as e:  # transformers raises OSError, ValueError, ... for a bad directory
                raise BackendError(f"cannot load the tokenizer of {self.model!r} from {self._tokenizer_path}: "
                                   f"{type(e).__name__}: {str(e)[:200]}") from None
        return self._tok

    # ---- HTTP ------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        try:
            r = self._session().request(method, url, json=payload, headers=self._headers, timeout=self.timeout_s)
        except requests.exceptions.Timeout:
            raise BackendError(f"{url}: no answer within {self.timeout_s:g}s (timeout_s); the server is "
                               "overloaded or the request is too large") from None
        except requests.exceptions.ConnectionError as e:
            raise BackendError(f"cannot connect to {url}: is the server running? start it (e.g. `vllm serve "
                               f"MODEL` or verinet's OpenAI-compatible server) and check base_url "
                               f"({type(e).__name__})") from None
        except requests.exceptions.RequestException as e:
            raise BackendError(f"{url}: request failed: {e}") from None
        if r.status_code >= 400:
            msg = _server_message(r)
            raise _HTTPError(f"{url}: HTTP {r.status_code}: {msg}", r.status_code, msg)
        try:
            body = r.json()
        except ValueError:
            raise BackendError(f"{url}: the server's answer is not JSON: {r.text[:200]!r}") from None
        if not isinstance(body, dict):
            raise BackendError(f"{url}: the server's answer is not a JSON object: {r.text[:200]!r}")
        return body

    def _complete(self, payload: dict[str, Any], n_choices: int, *,
                  generates: bool = True) -> tuple[list[dict[str, Any]], Usage]:
        """POST /completions; the choices sorted by index (prompt-major), checked to be all there. Usage as
        the in-process engines count it: prefill without the tokens the server's prefix cache served, and no
        decode for a scoring call (``generates`` False), whose one token is there only for the log-probs."""
        body = self._request("POST", "/completions", {"model": self.model, **payload})
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != n_choices:
            got = len(choices) if isinstance(choices, list) else choices
            raise BackendError(f"{self.base_url}/completions: expected {n_choices} choices, got {got}")
        try:
            choices = sorted(choices, key=lambda c: c["index"])
        except (KeyError, TypeError):
            raise BackendError(f"{self.base_url}/completions: choices without an index") from None
        u = body.get("usage") or {}
        cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        decode = int(u.get("completion_tokens") or 0) if generates else 0
        return choices, Usage(prefill=max(int(u.get("prompt_tokens") or 0) - cached, 0), decode=decode)

    def health(self) -> None:
        """Check that the server answers and serves this model; BackendError saying what is wrong otherwise."""
        body = self._request("GET", "/models")
        served = [m.get("id") for m in body.get("data") or [] if isinstance(m, dict)]
        if self.model not in served:
            raise BackendError(f"{self.base_url}: the server does not serve model {self.model!r}; it serves {served}")

    # ---- generate --------------------------------------------------------------------
    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None) -> GenerateResult:
        check_sampling(n, temperature, top_p, max_tokens)
        usage = Usage()
        out: list[list[Completion]] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i:i + self.batch_size]
            payload: dict[str, Any] = {"prompt": chunk, "n": n, "temperature": temperature, "top_p": top_p,
                                       "max_tokens": max_tokens}
            if stop:
                payload["stop"] = list(stop)
            if seed is not None:
                payload["seed"] = seed
            while True:
                if self._generate_logprobs:
                    payload["logprobs"] = 0  # only to learn each choice's token count
                try:
                    choices, u = self._complete(payload, len(chunk) * n)
                    break
                except _HTTPError as e:
                    if self._generate_logprobs and e.status in (400, 422) and "logprobs" in e.server_message:
                        self._generate_logprobs = False  # counts then come from sharing out the usage
                        payload.pop("logprobs")
                        continue
                    raise
            usage += u
            counts = _token_counts(choices, u.decode)
            for p in range(len(chunk)):
                out.append([Completion(str(c.get("text") or ""), counts[p * n + j],
                                       "length" if c.get("finish_reason") == "length" else "stop")
                            for j, c in enumerate(choices[p * n:(p + 1) * n])])
        return GenerateResult(out, usage)

    # ---- scoring ---------------------------------------------------------------------
    def score(self, prompts: list[str], candidates: list[str]) -> ScoreResult:
        if not candidates:
            raise ValueError("candidates must not be empty")
        if any(not c for c in candidates):
            raise ValueError("every candidate must be a non-empty string")
        result: list[list[float | None]] = [[None] * len(candidates) for _ in prompts]
        usage = Usage()
        if prompts and any(c not in self._multi_token for c in candidates):
            k = min(MAX_TOP_LOGPROBS, max(len(candidates), MIN_TOP_LOGPROBS))
            for i in range(0, len(prompts), self.batch_size):
                chunk = prompts[i:i + self.batch_size]
                choices, u = self._complete({"prompt": chunk, "max_tokens": 1, "temperature": 0, "logprobs": k},
                                            len(chunk), generates=False)
                usage += u
                for b, c in enumerate(choices):
                    tops = ((c.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
                    for j, cand in enumerate(candidates):
                        if cand in tops and cand not in self._multi_token:
                            result[i + b][j] = float(tops[cand])
        missing = [(i, j) for i, row in enumerate(result) for j, v in enumerate(row) if v is None]
        if missing:
            lps, u = self._echo_score([(prompts[i], candidates[j]) for i, j in missing])
            usage += u
            for (i, j), lp in zip(missing, lps):
                result[i][j] = lp
        return ScoreResult(result, usage)  # type: ignore[arg-type]

    def _echo(self, texts: list[str]) -> tuple[list[dict[str, Any]], Usage]:
        """One echo request: every text's own tokens with their log-probs and offsets, nothing generated
        (``max_tokens`` 0; 1, ignored, on servers that refuse 0)."""
        while True:
            payload = {"prompt": texts, "max_tokens": self._echo_max_tokens, "temperature": 0, "echo": True,
                       "logprobs": 1}
            try:
                return self._complete(payload, len(texts), generates=False)
            except _HTTPError as e:
                if self._echo_max_tokens == 0 and e.status in (400, 422) and "max_tokens" in e.server_message:
                    self._echo_max_tokens = 1  # generate one token and ignore it
                    continue
                raise

    def _echo_score(self, pairs: list[tuple[str, str]]) -> tuple[list[float], Usage]:
        """log P(candidate | prompt) from the log-probs of prompt + candidate, echoed back."""
        usage = Usage()
        out: list[float] = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i:i + self.batch_size]
            texts = [p + c for p, c in chunk]
            choices, u = self._echo(texts)
            usage += u
            for (prompt, cand), c in zip(chunk, choices):
                out.append(self._candidate_logprob(prompt, cand, c))
        return out, usage

    def token_logprobs(self, texts: list[str]) -> TokenLogprobs:
        """Prompt log-probs by echo (``echo: true, max_tokens: 0, logprobs: 1``), with each token's
        character offset; tokens the server generated past the text (``max_tokens`` 1) are dropped."""
        usage, result = Usage(), []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i:i + self.batch_size]
            choices, u = self._echo(chunk)
            usage += u
            for text, c in zip(chunk, choices, strict=True):
                lp = c.get("logprobs") or {}
                tokens, lps, offs = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("text_offset") or []
                if not (len(tokens) == len(lps) == len(offs)) or not tokens:
                    raise BackendError(f"{self.base_url}/completions: echo returned no usable logprobs "
                                       "(the server must support echo with logprobs)")
                shift = _prepended(text, tokens, offs)  # a BOS the server added: not part of the text
                offs = [o - shift for o in offs]
                ends = [*offs[1:], max(len(text), offs[-1] + len(str(tokens[-1])))]
                spans = list(zip(offs, ends))
                result.append([(s, e, float(v)) for (s, e), v in zip(spans, lps)
                               if v is not None and 0 <= s < len(text)])
        return TokenLogprobs(result, usage)

    def _candidate_logprob(self, prompt: str, cand: str, choice: dict[str, Any]) -> float:
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        token_lps = lp.get("token_logprobs") or []
        offsets = lp.get("text_offset") or []
        if not (len(tokens) == len(token_lps) == len(offsets)) or not tokens:
            raise BackendError(f"{self.base_url}/completions: echo returned no usable logprobs "
                               "(the server must support echo with logprobs)")
        text = prompt + cand
        shift = _prepended(text, tokens, offsets)
        start, end = len(prompt) + shift, len(text) + shift
        picked = [(t, v) for t, v, o in zip(tokens, token_lps, offsets) if start <= o < end]
        if not picked:
            raise BackendError(f"{self.base_url}/completions: no token of candidate {cand!r} in the echo")
        if any(v is None for _, v in picked):
            raise BackendError(f"candidate {cand!r} has no log-prob: the prompt must not be empty")
        if len(picked) > 1:
            self._multi_token.add(cand)
        return float(sum(v for _, v in picked))

    def score_tagged(self, texts: list[str], tag: str, valid: str, invalid: str) -> TaggedResult:
        if not tag or not valid or not invalid:
            raise BackendError("tag, valid and invalid must be non-empty strings")
        prefixes: list[str] = []
        owner: list[int] = []
        for t, text in enumerate(texts):
            at = text.find(tag)
            while at >= 0:
                prefixes.append(text[:at + len(tag)])
                owner.append(t)
                at = text.find(tag, at + len(tag))
        p_valid: list[list[float]] = [[] for _ in texts]
        if not prefixes:
            return TaggedResult(p_valid, Usage())
        res = self.score(prefixes, [valid, invalid])
        for t, (lv, li) in zip(owner, res.logprobs):
            m = max(lv, li)
            ev, ei = math.exp(lv - m), math.exp(li - m)
            p_valid[t].append(ev / (ev + ei))
        return TaggedResult(p_valid, res.usage)

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url,
                **({"tokenizer": self._tokenizer_path} if self._tokenizer_path else {})}

    def close(self) -> None:
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None


def _server_message(r: requests.Response) -> str:
    """The error message of an OpenAI-style (or FastAPI-style) error body, else the start of the text."""
    try:
        body = r.json()
    except ValueError:
        return r.text[:500] or r.reason or ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:500]


def _token_counts(choices: list[dict[str, Any]], completion_tokens: int) -> list[int]:
    """Generated tokens per choice: from its logprobs when the server sent them, else a share of the usage."""
    counts = [len(((c.get("logprobs") or {}).get("tokens")) or []) if c.get("logprobs") else None for c in choices]
    if all(x is not None for x in counts):
        return counts  # type: ignore[return-value]
    # no per-choice counts: share completion_tokens out by text length (largest remainder)
    lengths = [len(c.get("text") or "") for c in choices]
    total = sum(lengths)
    if total == 0:
        base = [completion_tokens // len(choices)] * len(choices)
        for i in range(completion_tokens - sum(base)):
            base[i] += 1
        return base
    raw = [completion_tokens * x / total for x in lengths]
    base = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - base[i], reverse=True)
    for i in order[:completion_tokens - sum(base)]:
        base[i] += 1
    return base


def _prepended(text: str, tokens: list[Any], offsets: list[int]) -> int:
    """Characters of a special token (e.g. ``<s>``) that the server put before ``text`` in its echo, whose
    offsets then count it; 0 when the echo starts with the text itself."""
    first, last = str(tokens[0]), str(tokens[-1])
    if len(offsets) > 1 and not text.startswith(first) and offsets[1] == len(first):
        # a first token that is a piece of a multi-byte character ('\ufffd', 'bytes:\xe2') also fails
        # startswith: the end of the echo decides, where its last token is plain text
        if not text.endswith(last) or offsets[-1] + len(last) == len(text) + len(first):
            return len(first)
    return 0
