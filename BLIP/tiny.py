"""blip-tiny: a BLIP small enough for tests that has learned to caption the shipped images.

A random tiny BLIP repeats one token forever, which makes "same tokens as
PyTorch" a weak check and run/chat show nothing. So the tiny model is trained
for a few seconds to memorise one caption per image in `images/` (conditional
captioning then continues any prefix of a caption). The trained weights are
cached on disk, keyed by everything that shapes them, so every process on a
machine uses the same weights; the family also puts their digest into the
export cache key.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BlipConfig, BlipForConditionalGeneration, PreTrainedTokenizerFast

from NNDF.base.hashing import file_digest, stable_hash
from NNDF.models.images import ImageSettings, open_image, pixel_values
from NNDF.models.tiny_training import cache_root
from NNDF.models.tokenizers import DATA_DIR
from NNDF.runtime.placement import torch_threads

IMAGES = Path(__file__).resolve().parent / "images"
CAPTIONS = {   # what blip-tiny learns, and the labels of checkpoint.toml
    "red_circle.png": "a red circle on a white background",
    "blue_stripes.png": "blue stripes on a white background",
    "green_square.png": "a green square on a black background",
    "yellow_triangle.png": "a yellow triangle on a blue background",
}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]   # BERT's, then BLIP's bos and [ENC]
IMAGE_SIZE, PATCH = 32, 8
TRAIN_STEPS, TRAIN_LR, TRAINING_VERSION = 150, 3e-3, 1


def wordpiece_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """An uncased BERT-style WordPiece tokenizer with BLIP's [DEC] bos, built from the shipped corpus.

    The vocabulary is counted here rather than by `tokenizers`' WordPieceTrainer, whose
    ties come out in a different order in every process: specials, every character
    (alone and as a ##continuation, so nothing is unknown), the caption words, then the
    commonest words.
    """
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    corpus = (DATA_DIR / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines() + list(CAPTIONS.values())
    counts = Counter(word for line in corpus for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for word in counts for c in word})
    caption_words = sorted({w for c in CAPTIONS.values() for w in c.split()})
    vocab = SPECIALS + chars + ["##" + c for c in chars] + caption_words
    vocab += [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in vocab]
    backend = Tokenizer(models.WordPiece({tok: i for i, tok in enumerate(vocab[:vocab_size])}, unk_token="[UNK]"))
    backend.normalizer, backend.pre_tokenizer = normalizer, splitter
    backend.decoder = decoders.WordPiece(prefix="##")
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                           special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]",
                                   additional_special_tokens=["[ENC]"])


def tiny_config(tokenizer) -> BlipConfig:
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("pad_token_id", "[PAD]"), ("bos_token_id", "[DEC]"), ("sep_token_id", "[SEP]"), ("eos_token_id", "[SEP]"))}
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, **ids)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=PATCH, initializer_range=0.02)
    return BlipConfig(text_config=text, vision_config=vision)


def build_tiny(seed: int):
    """(model, tokenizer): loaded from the per-machine cache, or built, trained and cached."""
    tokenizer = wordpiece_tokenizer()
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(tiny_config(tokenizer))
    key = {"seed": seed, "steps": TRAIN_STEPS, "lr": TRAIN_LR, "version": TRAINING_VERSION, "captions": CAPTIONS,
           "images": {n: file_digest(IMAGES / n) for n in CAPTIONS}, "vocab": tokenizer.get_vocab(),
           "config": model.config.to_dict(), "transformers": transformers.__version__,
           "torch": torch.__version__.split("+")[0]}
    path = cache_root() / f"blip-tiny-{stable_hash(key)}" / "model.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu"))
    else:
        with torch_threads(1):   # a 160k-parameter model: more threads only contend on a shared machine
            _train(model, tokenizer, seed)
        _save(model, path)
    return model.eval(), tokenizer


def _train(model, tokenizer, seed: int) -> None:
    """Full-batch AdamW on teacher-forced captions: [DEC] caption [SEP], as BLIP is trained."""
    torch.manual_seed(seed)
    settings = ImageSettings(IMAGE_SIZE, IMAGE_SIZE)
    pixels = torch.from_numpy(pixel_values([open_image(str(IMAGES / n)) for n in CAPTIONS], settings))
    enc = tokenizer(list(CAPTIONS.values()), padding=True, return_tensors="pt")
    input_ids = enc["input_ids"].clone()
    input_ids[:, 0] = tokenizer.bos_token_id
    labels = input_ids.masked_fill(enc["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR)
    model.train()
    for _ in range(TRAIN_STEPS):
        loss = model(pixel_values=pixels, input_ids=input_ids, attention_mask=enc["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _save(model, path: Path) -> None:
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.parent.name}.", dir=path.parent.parent))
    try:
        torch.save(model.state_dict(), tmp / path.name)
        if not path.parent.exists():   # a racing process may have saved the same weights first
            os.replace(tmp, path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
