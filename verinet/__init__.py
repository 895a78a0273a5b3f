"""verinet: ensembles of small language models that cross-verify reasoning steps."""

__version__ = "0.1.0"
