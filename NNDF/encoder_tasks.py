"""Encoder tasks on the host: examples in, feeds out; outputs in, answers and metrics out.

The same numpy post-processing serves every backend, so frameworks, onnxrt and trt can only
differ by their outputs. Each task's answer follows the HuggingFace pipeline of that task
(`tests/test_bert_family.py` checks them against `transformers.pipeline`):
- text / image classification: softmax, the top class (sigmoid for a one-logit head);
- question answering: the answer transformers' question-answering pipeline gives (5.x removed it;
  this follows 4.57's, with its defaults): p(start) and p(end) are softmaxes over the context and
  [CLS], [CLS] then zeroed; the 12 best spans of at most 15 tokens by p(start) * p(end) are widened
  to whole words, spans of the same text (ignoring case) add their scores, and the best wins;
- token classification: per-token argmax with softmax scores, grouped into entities by the
  token-classification pipeline's "simple" aggregation (B- starts an entity, I- of the same type
  continues it, "O" is dropped);
- embeddings: the graph's mean pooling over real tokens.

Examples are dicts: {"text"}, {"question", "context"}, {"image"}, with an optional "label"
(class name, answer text, entity list, class name) or "answers" / "tags" in datasets.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from NNDF.data_checks import read_jsonl, type_name
from NNDF.encoder_only import EncoderModel, Task
from NNDF.errors import UsageError
from NNDF.generation import softmax

MAX_ANSWER_TOKENS = 15        # the question-answering pipeline's max_answer_len
QA_CANDIDATES = 12            # the spans it ranks before aligning to words: top_k * 2 + 10, top_k 1
TOP_K_IMAGES = 5
NO_ENTITIES = "(no entities)"
QA_SEPARATOR = "|||"          # chat and --dataset-less inputs: "question ||| context" is one QA example


@dataclass
class Batch:
    """One batch fed to a backend, with what post-processing needs to map outputs back to text."""

    feed: dict[str, np.ndarray]
    examples: list[dict]
    offsets: np.ndarray | None = None          # (rows, seq, 2) character spans of the tokens
    special: np.ndarray | None = None          # (rows, seq) 1 for [CLS]/[SEP]/padding
    sequence_ids: list[list[int | None]] | None = None   # QA: 0 question, 1 context, None special
    word_ids: list[list[int | None]] | None = None       # QA: the word of each token (None special)


# --------------------------------------------------------------------------- inputs
def encode(loaded: EncoderModel, examples: list[dict], pad_to: int | None = None) -> Batch:
    """Feeds for one batch of examples (right-padded, as BERT tokenizers pad)."""
    if loaded.is_image:
        return Batch({"pixel_values": image_pixels(loaded, [ex["image"] for ex in examples])}, examples)
    tok = loaded.tokenizer
    common = dict(truncation=True if loaded.task is not Task.QUESTION_ANSWERING else "only_second",
                  max_length=loaded.max_positions, return_tensors="np", return_offsets_mapping=True,
                  return_special_tokens_mask=True, padding="max_length" if pad_to else True)
    if pad_to:
        common["max_length"] = pad_to
    if loaded.task is Task.QUESTION_ANSWERING:
        for ex in examples:
            check_qa(ex)
        enc = tok([ex["question"] for ex in examples], [ex["context"] for ex in examples], **common)
    else:
        enc = tok([ex["text"] for ex in examples], **common)
    feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    if loaded.layout.uses_token_types:
        types = enc.get("token_type_ids")
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"]) if types is None else types.astype(np.int64)
    special = np.maximum(enc["special_tokens_mask"], 1 - feed["attention_mask"])
    qa = loaded.task is Task.QUESTION_ANSWERING
    seq_ids = [enc.sequence_ids(i) for i in range(len(examples))] if qa else None
    word_ids = [enc.word_ids(i) for i in range(len(examples))] if qa else None
    return Batch(feed, examples, enc["offset_mapping"], special, seq_ids, word_ids)


def check_qa(example: dict) -> None:
    if not str(example.get("context") or "").strip():
        raise UsageError(f"question {example.get('question', '')!r} has no context to find its answer in",
                         'give each question a context (checkpoint: context = "..."; chat: the first line; '
                         f'a line "QUESTION {QA_SEPARATOR} CONTEXT")')
    if not str(example.get("question") or "").strip():
        raise UsageError("a question-answering example has a context but no question", "add the question")


def image_pixels(loaded: EncoderModel, sources: list[str]) -> np.ndarray:
    """(batch, 3, H, W) as the model's HF image processor makes them (ViT: bilinear, mean/std 0.5)."""
    from Vision2Seq.images import ImageSettings, as_source, open_image, pixel_values

    layout = loaded.layout
    height, width = loaded.image_size
    settings = ImageSettings(height, width, layout.image_mean, layout.image_std, "bilinear")
    return pixel_values([open_image(as_source(s), loaded.image_dirs) for s in sources], settings)


def random_batch(loaded: EncoderModel, batch_size: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """Benchmark input: seeded random tokens of exactly seq_len (or random pixels), no padding."""
    rng = np.random.default_rng(seed)
    if loaded.is_image:
        h, w = loaded.image_size
        return {"pixel_values": rng.standard_normal((batch_size, loaded.config.num_channels, h, w)).astype(np.float32)}
    if seq_len > loaded.max_positions:
        raise UsageError(f"--input-seq-len {seq_len} exceeds {loaded.variant}'s {loaded.max_positions} positions",
                         "lower --input-seq-len")
    vocab = min(loaded.config.vocab_size, len(loaded.tokenizer))
    ids = rng.integers(0, vocab, size=(batch_size, seq_len), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if loaded.layout.uses_token_types:
        types = np.zeros_like(ids)
        types[:, seq_len // 2:] = 1      # a question and a context, as QA feeds them
        feed["token_type_ids"] = types
    return feed


# --------------------------------------------------------------------------- answers
def predict(loaded: EncoderModel, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
    """One answer per example; "label" is what `run` shows and matches against the example's label."""
    task = loaded.task
    if task in (Task.SEQUENCE_CLASSIFICATION, Task.IMAGE_CLASSIFICATION):
        return [classify(row, loaded.labels, top_k=TOP_K_IMAGES if task is Task.IMAGE_CLASSIFICATION else 1)
                for row in outputs["logits"]]
    if task is Task.QUESTION_ANSWERING:
        return [qa_answer(outputs["start_logits"][i], outputs["end_logits"][i], batch.sequence_ids[i],
                          batch.word_ids[i], batch.offsets[i], batch.feed["attention_mask"][i], ex["context"])
                for i, ex in enumerate(batch.examples)]
    if task is Task.TOKEN_CLASSIFICATION:
        return [ner_answer(loaded, outputs["logits"][i], batch.feed["input_ids"][i], batch.offsets[i],
                           batch.special[i], ex["text"]) for i, ex in enumerate(batch.examples)]
    return [{"label": f"{len(v)}-d embedding, norm {float(np.linalg.norm(v)):.3f}", "embedding": v.tolist()}
            for v in outputs["embeddings"]]


def classify(logits: np.ndarray, labels: list[str], top_k: int = 1) -> dict:
    if len(logits) == 1:      # one-logit heads: the pipeline's sigmoid
        p = 1 / (1 + np.exp(-logits))
        return {"label": labels[0], "score": float(p[0]), "top": [labels[0]]}
    probs = softmax(logits)
    order = np.argsort(-probs, kind="stable")
    return {"label": labels[int(order[0])], "score": float(probs[order[0]]),
            "top": [labels[int(i)] for i in order[:top_k]]}


def qa_answer(start_logits, end_logits, sequence_ids, word_ids, offsets, mask, context: str) -> dict:
    """The answer transformers 4.57's question-answering pipeline gives (top_k 1, max_answer_len 15,
    align_to_words, handle_impossible_answer off)."""
    context_tokens = np.array([s == 1 for s in sequence_ids], bool) & (np.asarray(mask) == 1)
    # [CLS] (first in BERT's layout) stays in the softmax, as the pipeline's "no answer" slot, then is zeroed
    normalised = context_tokens.copy()
    normalised[0] = True
    p_start = softmax(np.where(normalised, start_logits, -10000.0))
    p_end = softmax(np.where(normalised, end_logits, -10000.0))
    p_start[0] = p_end[0] = 0.0
    scores = np.tril(np.triu(np.outer(p_start, p_end)), MAX_ANSWER_TOKENS - 1)
    best = np.argsort(-scores, axis=None, kind="stable")[:QA_CANDIDATES]
    # each context word's characters: a span is widened to whole words (the pipeline's align_to_words)
    in_context = [seq == 1 and w is not None for seq, w in zip(sequence_ids, word_ids)]
    words: dict[int, tuple[int, int]] = {}
    for t in np.flatnonzero(in_context):
        a, b = words.get(word_ids[t], (int(offsets[t][0]), int(offsets[t][1])))
        words[word_ids[t]] = (min(a, int(offsets[t][0])), max(b, int(offsets[t][1])))
    found: list[dict] = []
    for flat in best:
        s, e = np.unravel_index(int(flat), scores.shape)
        if not ((context_tokens[s] or s == 0) and (context_tokens[e] or e == 0)):
            continue
        begin = words[word_ids[s]][0] if in_context[s] else int(offsets[s][0])
        finish = words[word_ids[e]][1] if in_context[e] else int(offsets[e][1])
        text = context[begin:finish]
        same = next((f for f in found if f["answer"].lower() == text.lower()), None)
        if same is not None:       # the same words found from other tokens: their scores add up
            same["score"] += float(scores[s, e])
        else:
            found.append({"label": text, "answer": text, "start": begin, "end": finish, "score": float(scores[s, e])})
    # the first of the best (a stable sort, as the pipeline's); nothing when truncation left no context
    return max(found, key=lambda f: f["score"], default={"label": "", "answer": "", "start": 0, "end": 0, "score": 0.0})


def ner_answer(loaded: EncoderModel, logits, input_ids, offsets, special, text: str) -> dict:
    """Entities by the token-classification pipeline's "simple" aggregation."""
    labels = loaded.labels
    probs = softmax(logits)
    tokens = []
    for i in range(len(input_ids)):
        if special[i]:
            continue
        k = int(np.argmax(probs[i]))
        tokens.append({"entity": labels[k], "score": float(probs[i, k]), "start": int(offsets[i][0]),
                       "end": int(offsets[i][1]), "token": loaded.tokenizer.convert_ids_to_tokens(int(input_ids[i]))})
    groups, current = [], []
    for t in tokens:
        bi, tag = _tag(t["entity"])
        if current and tag == _tag(current[-1]["entity"])[1] and bi != "B":
            current.append(t)
            continue
        if current:
            groups.append(current)
        current = [t]
    if current:
        groups.append(current)
    entities = []
    for g in groups:
        group = _tag(g[0]["entity"])[1]
        if group == "O":
            continue
        entities.append({"entity_group": group, "score": float(np.mean([t["score"] for t in g])),
                         "word": loaded.tokenizer.convert_tokens_to_string([t["token"] for t in g]),
                         "start": g[0]["start"], "end": g[-1]["end"]})
    return {"label": entity_label(entities), "entities": entities}


def _tag(name: str) -> tuple[str, str]:
    if name.startswith(("B-", "I-")):
        return name[0], name[2:]
    return "I", name


def entity_label(entities: list[dict]) -> str:
    """"Anna (PER), Paris (LOC)": how run shows entities and how checkpoint labels write them."""
    return ", ".join(f"{e['word']} ({e['entity_group']})" for e in entities) or NO_ENTITIES


# --------------------------------------------------------------------------- metrics
def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold:
        return float(pred == gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def bio_spans(tokens: list[str], tags: list[str]) -> tuple[str, set[tuple[str, int, int]]]:
    """The text (tokens joined by spaces) and its gold entities as (type, start, end) character spans."""
    text, starts = "", []
    for t in tokens:
        if text:
            text += " "
        starts.append(len(text))
        text += t
    spans, open_span = set(), None
    for i, tag in enumerate(list(tags) + ["O"]):
        bi, kind = _tag(tag) if tag != "O" else ("O", "O")
        if open_span and (bi != "I" or kind != open_span[0]):
            spans.add(open_span)
            open_span = None
        if bi == "B" or (bi == "I" and open_span is None):
            open_span = (kind, starts[i], starts[i] + len(tokens[i]))
        elif bi == "I" and open_span:
            open_span = (kind, open_span[1], starts[i] + len(tokens[i]))
    return text, spans


def entity_f1(predicted: list[set], gold: list[set]) -> dict:
    """Micro precision / recall / F1 over exact (type, start, end) entity matches (seqeval's rule)."""
    hit = sum(len(p & g) for p, g in zip(predicted, gold))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    precision = hit / n_pred if n_pred else 0.0
    recall = hit / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def score(loaded: EncoderModel, examples: list[dict], answers: list[dict], reference: list[dict] | None) -> dict:
    """The task's metric over a dataset (reference: frameworks' answers, for embeddings)."""
    task = loaded.task
    if task is Task.SEQUENCE_CLASSIFICATION:
        return {"accuracy": float(np.mean([a["label"] == ex["label"] for a, ex in zip(answers, examples)]))}
    if task is Task.IMAGE_CLASSIFICATION:
        return {"top_1": float(np.mean([a["label"] == ex["label"] for a, ex in zip(answers, examples)])),
                # among the 5 most likely classes (all of them, for a model of 5 classes or fewer)
                "top_5": float(np.mean([ex["label"] in a["top"][:TOP_K_IMAGES] for a, ex in zip(answers, examples)]))}
    if task is Task.QUESTION_ANSWERING:
        em = [max(float(normalize_answer(a["answer"]) == normalize_answer(g)) for g in ex["answers"])
              for a, ex in zip(answers, examples)]
        f1 = [max(answer_f1(a["answer"], g) for g in ex["answers"]) for a, ex in zip(answers, examples)]
        return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}
    if task is Task.TOKEN_CLASSIFICATION:
        predicted = [{(e["entity_group"], e["start"], e["end"]) for e in a["entities"]} for a in answers]
        return entity_f1(predicted, [ex["spans"] for ex in examples])
    sims = [cosine(np.asarray(a["embedding"]), np.asarray(r["embedding"])) for a, r in zip(answers, reference)]
    return {"cosine_mean": float(np.mean(sims)), "cosine_min": float(np.min(sims))}


PRIMARY_METRIC = {Task.SEQUENCE_CLASSIFICATION: "accuracy", Task.IMAGE_CLASSIFICATION: "top_1",
                  Task.QUESTION_ANSWERING: "f1", Task.TOKEN_CLASSIFICATION: "entity_f1",
                  Task.EMBEDDINGS: "cosine_mean"}


# --------------------------------------------------------------------------- datasets
DATASET_FIELDS = {
    Task.SEQUENCE_CLASSIFICATION: '{"text": ..., "label": CLASS NAME}',
    Task.QUESTION_ANSWERING: '{"question": ..., "context": ..., "answers": [ANSWER, ...]}',
    Task.TOKEN_CLASSIFICATION: '{"tokens": [WORD, ...], "tags": [BIO TAG, ...]}',
    Task.EMBEDDINGS: '{"text": ...}',
    Task.IMAGE_CLASSIFICATION: '{"image": PATH, "label": CLASS NAME}',
}


def calibration_feeds(loaded: EncoderModel, batch_size: int = 8, batches: int = 4) -> list[dict]:
    """Feeds of the family's shipped training data for the task (the int8 activation ranges)."""
    if loaded.calibration_path is None:
        raise UsageError(f"{loaded.variant} ({loaded.task.value}) has no shipped calibration data for int8",
                         "drop --quantize for trt, or use onnxrt's dynamic int8")
    rows = dataset(loaded, loaded.calibration_path, check_labels=False)[: batch_size * batches]
    return [encode(loaded, rows[i:i + batch_size]).feed for i in range(0, len(rows), batch_size)]


def dataset(loaded: EncoderModel, path: Path, check_labels: bool = True) -> list[dict]:
    """The task's examples from a JSONL file, every field checked (one line naming the first bad one)."""
    task, examples = loaded.task, []
    fix = f"a {task.value} sample is one object per line: {DATASET_FIELDS[task]}"

    def text_field(row, name, number):
        if not isinstance(row.get(name), str):
            got = "missing" if name not in row else type_name(row[name])
            raise UsageError(f"{path} line {number}: \"{name}\" is {got}, not a string", fix)
        return row[name]

    for number, row in read_jsonl(path):
        if task in (Task.SEQUENCE_CLASSIFICATION, Task.IMAGE_CLASSIFICATION):
            key = "image" if task is Task.IMAGE_CLASSIFICATION else "text"
            ex = {key: text_field(row, key, number), "label": text_field(row, "label", number)}
            if key == "image" and not Path(ex["image"]).is_absolute():
                ex["image"] = str((Path(path).parent / ex["image"]))
            if check_labels and ex["label"] not in loaded.labels:
                raise UsageError(f"{path} line {number}: label {ex['label']!r} is not one of {loaded.variant}'s "
                                 f"classes ({', '.join(loaded.labels[:8])}{', ...' if len(loaded.labels) > 8 else ''})",
                                 "use the model's class names")
        elif task is Task.QUESTION_ANSWERING:
            ex = {"question": text_field(row, "question", number), "context": row.get("context")}
            if not isinstance(ex["context"], str) or not ex["context"].strip():
                raise UsageError(f"{path} line {number}: the question has no context", fix)
            answers = row.get("answers", [row["answer"]] if isinstance(row.get("answer"), str) else None)
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise UsageError(f"{path} line {number}: \"answers\" must be a list of strings", fix)
            ex["answers"] = answers
        elif task is Task.TOKEN_CLASSIFICATION:
            tokens, tags = row.get("tokens"), row.get("tags")
            if (not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags) or not tokens
                    or not all(isinstance(t, str) for t in tokens + tags)):
                raise UsageError(f"{path} line {number}: needs \"tokens\" and \"tags\", lists of strings of one length", fix)
            text, spans = bio_spans(tokens, tags)
            ex = {"text": text, "spans": spans}
        else:
            ex = {"text": text_field(row, "text", number)}
        examples.append(ex)
    return examples


def parse_line(loaded: EncoderModel, line: str, context: str | None = None) -> dict:
    """A chat line (or --checkpoint input) as an example: text, an image path, or a QA question
    (with the chat's context, or written "QUESTION ||| CONTEXT")."""
    if loaded.is_image:
        return {"image": line.strip()}
    if loaded.task is Task.QUESTION_ANSWERING:
        question, sep, inline = line.partition(QA_SEPARATOR)
        return {"question": question.strip(), "context": inline.strip() if sep else context}
    return {"text": line}
