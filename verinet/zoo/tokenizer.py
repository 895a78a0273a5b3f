"""The zoo's character-level tokenizer, built with `tokenizers` and saved as tokenizer.json.

Every printable ASCII character and the newline is one token. Special tokens:

* ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``;
* ``<v>`` — the verdict slot written after each step when a chain is verified;
* ``<+>`` / ``<->`` — the two verdict tokens, "valid" and "invalid";
* ``####`` — the answer cue, one token (it starts every chain's answer line).
"""

from __future__ import annotations

import string

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
TAG, VALID, INVALID = "<v>", "<+>", "<->"
ANSWER_CUE = "####"
SPECIALS = [PAD, BOS, EOS, UNK, TAG, VALID, INVALID]
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # includes space and newline


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh character tokenizer; the same on every machine (ids are fixed by the lists above)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [ANSWER_CUE] + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(""), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    tok.add_tokens([AddedToken(ANSWER_CUE, normalized=False, special=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[TAG, VALID, INVALID],
        padding_side="left",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
