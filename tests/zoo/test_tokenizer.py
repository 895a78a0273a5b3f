from transformers import AutoTokenizer

from verinet.zoo.tokenizer import ANSWER_CUE, INVALID, SPECIALS, TAG, VALID, build_tokenizer


def test_round_trip_and_single_token_specials(tmp_path):
    tok = build_tokenizer()
    text = "<bos>%10;a3;?x\nx:a+a>a3+a3>6;x6<v>\n#### 6<eos>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    for special in [*SPECIALS, ANSWER_CUE]:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    assert len({tok.convert_tokens_to_ids(t) for t in (TAG, VALID, INVALID)}) == 3
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert again.pad_token_id == tok.pad_token_id and again.padding_side == "left"


def test_every_task_character_is_in_vocabulary():
    from verinet.tasks import get_family

    tok = build_tokenizer()
    for fam, knobs in [("arith", {"steps": 5}), ("logic", {"vocabulary": "real"}), ("logic", {})]:
        f = get_family(fam)
        for p in f.sample(30, params=knobs):
            text = p.question + "\n" + f.gold_chain(p).text
            assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"]


def test_unknown_characters_map_to_unk():
    tok = build_tokenizer()
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
