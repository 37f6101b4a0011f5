"""``explain``: a clear error past the model's context, detokenised labels, and a PNG that stays readable."""

from __future__ import annotations

import pytest
import torch

from seqlevel.attributes import AttributeModel
from seqlevel.attributes.explain import explain
from seqlevel.presets import byte_tokenizer, tiny_model


@pytest.fixture
def cat():
    tok = byte_tokenizer()
    torch.manual_seed(0)
    return AttributeModel.for_base(tiny_model("tiny-gpt2", tokenizer=tok), kind="binary").eval(), tok


def test_text_longer_than_the_context_is_one_clear_error(cat):
    model, tok = cat
    with pytest.raises(ValueError, match=r"the text has 301 tokens but the model's context is 256 positions; "
                                         r".*no sliding window.*at most 256 tokens"):
        explain(model, tok, "x" * 300)


def test_labels_are_detokenised_in_the_table(cat):
    model, tok = cat
    ex = explain(model, tok, "great food", positions=[6])
    assert "Ġ" not in ex.table() and "Ġ" not in "".join(ex.tokens)
    assert ex.tokens[1:] == ["g", "r", "e", "a", "t", "␣", "f", "o", "o", "d"]


def test_a_long_text_wraps_into_rows_and_has_a_title(cat, tmp_path):
    from PIL import Image

    model, tok = cat
    text = ("the food was great and the staff were kind, " * 6)[:242]  # 242 bytes + <bos> = 243 tokens
    out = tmp_path / "x.png"
    ex = explain(model, tok, text, output_png=str(out))
    assert len(ex.tokens) == 243
    width, height = Image.open(out).size
    assert width < 2500 and height < 8000, (width, height)  # one 243-token strip was 10,935 px wide
