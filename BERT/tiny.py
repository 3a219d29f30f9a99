"""The tiny offline BERT / DistilBERT models, trained for a few seconds on the shipped data.

Each is 2 layers, 64 wide, with a cased WordPiece tokenizer whose vocabulary is counted from
the shipped text (so every shipped word is one token, and nothing is unknown: every character
is in it alone and as a ##continuation). Training is seeded, full-batch AdamW on the task's
`*_train.jsonl`, run once per machine and cached (NNDF/tiny_training.cached_training); the
`*_test.jsonl` files are what `accuracy` scores, never trained on.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertModel,
                          DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast)

from NNDF.models.tiny_training import cached_training
from NNDF.models.tokenizers import DATA_DIR

DATA = Path(__file__).resolve().parent / "data"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTIMENT = {0: "NEGATIVE", 1: "POSITIVE"}     # distilbert-base-uncased-finetuned-sst-2-english's classes
NER_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
SIZE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def _texts() -> list[str]:
    texts = (DATA_DIR / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    for split in ("train", "test"):
        texts += [r["text"] for r in rows(f"sentiment_{split}")]
        texts += [f"{r['question']} {r['context']}" for r in rows(f"qa_{split}")]
        texts += [" ".join(r["tokens"]) for r in rows(f"ner_{split}")]
    return texts


@cache
def _vocabulary() -> tuple[str, ...]:
    normalizer, splitter = normalizers.BertNormalizer(lowercase=False), pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for line in _texts() for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for word in counts for c in word})
    vocab = SPECIALS + chars + ["##" + c for c in chars]
    vocab += [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in vocab]
    return tuple(vocab[:2048])


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A cased BERT WordPiece tokenizer ([CLS] A [SEP] B [SEP], token type ids) built from shipped text."""
    vocab = _vocabulary()
    backend = Tokenizer(models.WordPiece({tok: i for i, tok in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                           special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids",
                                   "token_type_ids", "attention_mask"])


def _fit(model, batch: dict, steps: int, lr: float):
    def train():
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        for _ in range(steps):
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return train


def _train(name: str, seed: int, model, batch: dict, data: str, steps: int = 120, lr: float = 3e-3):
    return cached_training(name, seed, model, _fit(model, batch, steps, lr), (DATA / f"{data}.jsonl", Path(__file__)),
                           {"steps": steps, "lr": lr})


def build_sentiment(seed: int):
    """distilbert-tiny-sst2: DistilBERT sequence classification, NEGATIVE / POSITIVE."""
    tok = wordpiece_tokenizer()
    config = DistilBertConfig(vocab_size=len(tok), dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                              max_position_embeddings=128, pad_token_id=0, id2label=SENTIMENT,
                              label2id={v: k for k, v in SENTIMENT.items()},
                              architectures=["DistilBertForSequenceClassification"])
    model = DistilBertForSequenceClassification(config)
    train = rows("sentiment_train")
    batch = dict(tok([r["text"] for r in train], padding=True, return_tensors="pt", return_token_type_ids=False))
    batch["labels"] = torch.tensor([config.label2id[r["label"]] for r in train])
    return _train("distilbert-tiny-sst2", seed, model, batch, "sentiment_train", 150, 1e-3), tok


def build_qa(seed: int):
    """bert-tiny-squad: BERT extractive question answering on the shipped QA pairs."""
    tok = wordpiece_tokenizer()
    config = BertConfig(vocab_size=len(tok), **SIZE, architectures=["BertForQuestionAnswering"])
    model = BertForQuestionAnswering(config)
    train = rows("qa_train")
    enc = tok([r["question"] for r in train], [r["context"] for r in train], padding=True, return_tensors="pt")
    starts, ends = [], []
    for i, r in enumerate(train):
        begin = r["context"].index(r["answers"][0])
        starts.append(enc.char_to_token(i, begin, sequence_index=1))
        ends.append(enc.char_to_token(i, begin + len(r["answers"][0]) - 1, sequence_index=1))
    batch = {**enc, "start_positions": torch.tensor(starts), "end_positions": torch.tensor(ends)}
    return _train("bert-tiny-squad", seed, model, batch, "qa_train", steps=200), tok


def build_ner(seed: int):
    """bert-tiny-ner: BERT token classification (PER, ORG, LOC in BIO tags) on the shipped sentences."""
    tok = wordpiece_tokenizer()
    id2label = dict(enumerate(NER_TAGS))
    config = BertConfig(vocab_size=len(tok), **SIZE, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                        architectures=["BertForTokenClassification"])
    model = BertForTokenClassification(config)
    train = rows("ner_train")
    enc = tok([r["tokens"] for r in train], is_split_into_words=True, padding=True, return_tensors="pt")
    labels = torch.full(enc["input_ids"].shape, -100)
    for i, r in enumerate(train):
        previous = None
        for j, word in enumerate(enc.word_ids(i)):
            if word is None:
                continue
            tag = r["tags"][word]
            if word == previous and tag.startswith("B-"):   # a word's later pieces continue its entity
                tag = "I-" + tag[2:]
            labels[i, j] = config.label2id[tag]
            previous = word
    return _train("bert-tiny-ner", seed, model, {**enc, "labels": labels}, "ner_train", steps=150), tok


def build_embeddings(seed: int):
    """minilm-tiny-embeddings: a bare BERT encoder (all-MiniLM-L6-v2's shape, tiny), seeded, mean-pooled."""
    tok = wordpiece_tokenizer()
    config = BertConfig(vocab_size=len(tok), **SIZE, architectures=["BertModel"])
    return BertModel(config, add_pooling_layer=False), tok
