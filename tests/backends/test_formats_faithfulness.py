"""Prompt-format methods the faithfulness suite uses: continue, filler, edit (zoo and chat)."""

from verinet.backends.formats import FILLER, ChatFormat, ZooFormat, chat_template_renderer
from verinet.zoo import formats as zoo_formats
from verinet.zoo.tokenizer import build_tokenizer

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
STEPS = ["x:a+b>a1+b2>3;x3", "y:x*b>x3*b2>6;y6"]


def test_zoo_format():
    fmt = ZooFormat()
    assert FILLER == zoo_formats.FILLER
    assert fmt.continue_prompt("q", STEPS) == fmt.solve_prompt("q") + "x:a+b>a1+b2>3;x3\ny:x*b>x3*b2>6;y6\n"
    assert fmt.continue_prompt("q", []) == fmt.solve_prompt("q")
    # filler of the chain's length in characters (= zoo tokens), as the zoo was trained to read it
    filler = fmt.filler_prompt("q", STEPS)
    assert filler == zoo_formats.filler_prompt("q", len("\n".join(STEPS)))
    body = filler.removeprefix(fmt.solve_prompt("q")).removesuffix("\n#### ")
    assert set(body) == set(FILLER) and abs(len(body) - len("\n".join(STEPS))) < len(FILLER)
    assert fmt.edit_prompt("mistake", "q", STEPS[0]) is None  # zoo models take no instructions
    assert fmt.count_tokens("abc") == 3


def test_chat_format_with_a_tokenizer():
    tok = build_tokenizer()
    tok.chat_template = TEMPLATE
    fmt = ChatFormat(chat_template_renderer(tok))
    assert fmt.count_tokens("abc") == 3  # the zoo tokenizer: one token per character
    cont = fmt.continue_prompt("What is 3+3?", ["3+3 = 6"])
    assert cont.startswith(fmt.solve_prompt("What is 3+3?")) and cont.endswith("Step 1: 3+3 = 6\n")
    steps, answer = fmt.parse("Step 2: so 6\n#### 6")
    assert steps == ["so 6"] and answer == "6"
    filler = fmt.filler_prompt("What is 3+3?", ["3+3 = 6", "so the answer is 6"])
    assert filler.endswith("\n####") and fmt.force_prompt("q", ["s"]).endswith("Step 1: s\n####")
    n_block = fmt.count_tokens("Step 1: 3+3 = 6\nStep 2: so the answer is 6")
    n_filler = fmt.count_tokens(filler.removeprefix(fmt.solve_prompt("What is 3+3?")).removesuffix("\n####"))
    assert abs(n_filler - n_block) <= fmt.count_tokens(FILLER)
    edit = fmt.edit_prompt("mistake", "What is 3+3?", "3+3 = 6")
    assert "3+3 = 6" in edit and "mistake" in edit and edit.endswith("<assistant>")
    assert "Paraphrase" in fmt.edit_prompt("paraphrase", "q", "s")
    assert fmt.parse_edit("\n  Step 3: 3+3 = 7\nmore") == "3+3 = 7"


def test_chat_format_without_a_tokenizer_estimates_tokens():
    fmt = ChatFormat(lambda messages: "".join(m["content"] for m in messages))
    assert fmt.count_tokens("x" * 40) == 10
    assert FILLER in fmt.filler_prompt("q", ["a step of some length here"])
