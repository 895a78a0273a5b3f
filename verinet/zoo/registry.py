"""Where zoo checkpoints live and how names resolve to them.

The default ladder is committed inside the package (``verinet/zoo/models/NAME``), so
``pip install`` carries it. A name can also be any directory path holding a checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from verinet.zoo.config import ZooError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# The size ladder: one recipe at four sizes, the xs at three seeds, trained in four stages
# (configs/zoo/arith-only/ then configs/zoo/two-family/, each with its continuation; 38.9M tokens a size).
# Other committed checkpoints are other recipes (zoo-xs-sf: the xs trained to solve only); they load by
# name like any other, but the ladder's figures (own-error writers, its smallest size) are the ladder's.
LADDER = ("zoo-xs", "zoo-s", "zoo-m", "zoo-l")


def recipe_label(name: str) -> str:
    """'zoo-xs' for 'zoo-xs-s1': the seeds of one recipe and size share a label ('zoo-s' stays 'zoo-s')."""
    return re.sub(r"-s\d+$", "", name)


def list_checkpoints() -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, path, card) of every committed checkpoint that has a card, sorted by size."""
    found = []
    for d in sorted(MODELS_DIR.glob("*/card.json")):
        card = json.loads(d.read_text())
        found.append((d.parent.name, d.parent, card))
    return sorted(found, key=lambda x: (x[2]["parameters"]["non_embedding"], x[0]))


def resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if (MODELS_DIR / str(name_or_path)).is_dir():
        return MODELS_DIR / str(name_or_path)
    known = [n for n, _, _ in list_checkpoints()]
    raise ZooError(f"no zoo checkpoint {str(name_or_path)!r}: not a directory and not one of {known}; "
                   "train it with `verinet zoo train --config configs/zoo/NAME.yaml`")


def in_ladder(name: str) -> bool:
    """Whether a checkpoint name is one of the size ladder's (see LADDER)."""
    return recipe_label(name) in LADDER


def ladder() -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, path, card) of the size ladder's committed checkpoints (see LADDER), smallest first."""
    return [c for c in list_checkpoints() if in_ladder(c[0])]


def smallest() -> list[str]:
    """Names of the ladder's checkpoints of its smallest size (its seeds)."""
    found = ladder()
    if not found:
        return []
    least = found[0][2]["parameters"]["non_embedding"]
    return [name for name, _, card in found if card["parameters"]["non_embedding"] == least]
