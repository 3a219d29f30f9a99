import json
import re
from functools import cache

import pytest
from transformers import AutoTokenizer

from NNDF.models.tokenizers import (
    DATA_DIR,
    bart_style_tokenizer,
    build_byte_level_bpe,
    decode_safely,
    gpt2_style_tokenizer,
    t5_style_tokenizer,
)

SAMPLE = "Das Haus ist wunderbar. The lighthouse keeper climbed 90 steps!"
LAMBADA = DATA_DIR / "lambada_sample.jsonl"


@cache
def _tok(style: str):
    return {"gpt2": gpt2_style_tokenizer, "t5": t5_style_tokenizer, "bart": bart_style_tokenizer}[style]()


def _lambada_texts() -> list[str]:
    return [json.loads(line)["text"] for line in LAMBADA.read_text(encoding="ascii").splitlines()]


def test_build_is_deterministic():
    first, second = build_byte_level_bpe(), build_byte_level_bpe()
    assert first.get_vocab_size() == 512
    assert first.get_vocab() == second.get_vocab()
    assert first.to_str() == second.to_str()
    assert first.encode(SAMPLE).ids == second.encode(SAMPLE).ids
    assert first.token_to_id("<|endoftext|>") == 0


def test_byte_level_round_trip_of_unseen_text():
    tok = build_byte_level_bpe()
    text = "Zoë's naïve café costs 12,50 EUR"
    assert tok.decode(tok.encode(text).ids) == text


def test_gpt2_style_special_tokens():
    tok = _tok("gpt2")
    assert tok.eos_token == tok.bos_token == tok.unk_token == tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.pad_token_id == 0
    ids = tok(SAMPLE)["input_ids"]
    assert 0 not in ids  # no special tokens added around plain text
    assert tok.decode(ids) == SAMPLE


def test_t5_style_appends_eos():
    tok = _tok("t5")
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    ids = tok(SAMPLE)["input_ids"]
    assert ids[-1] == 1 and 1 not in ids[:-1]
    assert tok.decode(ids, skip_special_tokens=True) == SAMPLE


def test_bart_style_wraps_sequence():
    tok = _tok("bart")
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    ids = tok(SAMPLE)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert 0 not in ids[1:-1] and 2 not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == SAMPLE


@pytest.mark.parametrize("style", ["gpt2", "t5", "bart"])
def test_save_load_round_trip(style, tmp_path):
    tok = _tok(style)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [SAMPLE, "short", _lambada_texts()[0]]
    assert loaded(texts, padding=True)["input_ids"] == tok(texts, padding=True)["input_ids"]
    assert len(loaded) == len(tok)
    assert loaded.all_special_ids == tok.all_special_ids
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)


@pytest.mark.parametrize("style", ["gpt2", "t5", "bart"])
def test_decode_safely_marks_out_of_range_ids(style):
    tok = _tok(style)
    ids = tok("The lighthouse")["input_ids"]
    assert decode_safely(tok, ids) == tok.decode(ids, skip_special_tokens=True) == "The lighthouse"
    size = len(tok)
    mixed = [*ids, size, 50000, -1, *tok(" keeper", add_special_tokens=False)["input_ids"]]
    assert decode_safely(tok, mixed) == f"The lighthouse<id:{size}><id:50000><id:-1> keeper"
    assert decode_safely(tok, []) == ""


def test_lambada_lines_are_lambada_like():
    lines = LAMBADA.read_text(encoding="ascii").splitlines()
    assert len(lines) == 40
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"text"}
        text = record["text"]
        assert text == text.strip()
        words = re.findall(r"[A-Za-z']+", text)
        assert 50 <= len(words) <= 110, text
        target = words[-1].lower()
        assert text.rstrip().lower().endswith(target)
        earlier = {w.lower() for w in words[:-1]}
        assert target in earlier, f"last word {target!r} does not occur earlier: {text}"


def test_lambada_texts_tokenize_to_at_least_20_tokens():
    tok = _tok("gpt2")
    for text in _lambada_texts():
        assert len(tok(text)["input_ids"]) >= 20, text
