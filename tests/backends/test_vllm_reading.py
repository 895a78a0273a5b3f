"""How the vLLM backend reads one-pass tag scores, without the engine (tests/backends/test_vllm_backend.py runs it)."""

import math
from types import SimpleNamespace

import pytest

from verinet.backends.vllm import _chosen_p_valid


def test_one_pass_tag_scores_are_read_from_the_matrix_vllm_returns():
    # vLLM answers prompt_logprob_token_ids in prompt_token_id_logprobs: row i scores the token after
    # position i, columns in the order asked ([valid, invalid]); prompt_logprobs is not filled
    out = SimpleNamespace(prompt_token_id_logprobs=[[-5.0, -5.0], [math.log(0.3), math.log(0.1)]],
                          prompt_logprobs=None)
    assert _chosen_p_valid(out, 1, 7, 8) == pytest.approx(0.75)
    assert _chosen_p_valid(out, 0, 7, 8) == pytest.approx(0.5)
    # an engine that folds the chosen ids into prompt_logprobs: the next token's dict, at i + 1
    legacy = SimpleNamespace(prompt_logprobs=[None, {7: SimpleNamespace(logprob=math.log(0.3)),
                                                     8: SimpleNamespace(logprob=math.log(0.1))}])
    assert _chosen_p_valid(legacy, 0, 7, 8) == pytest.approx(0.75)
    assert _chosen_p_valid(SimpleNamespace(prompt_token_id_logprobs=[[-1e4, 0.0]]), 0, 7, 8) == pytest.approx(0.0)
