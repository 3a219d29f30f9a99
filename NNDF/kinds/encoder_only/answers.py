"""Encoder outputs in, answers out: the same numpy post-processing serves every backend, so
frameworks, onnxrt and trt can only differ by their outputs. Each task's answer follows the
HuggingFace pipeline of that task (`tests/test_bert_family.py` checks them against it):
- text / image classification: softmax, the top class (sigmoid for a one-logit head);
- question answering: the answer transformers' question-answering pipeline gives (5.x removed it;
  this follows 4.57's, with its defaults): p(start) and p(end) are softmaxes over the context and
  [CLS], [CLS] then zeroed; the 12 best spans of at most 15 tokens by p(start) * p(end) are widened
  to whole words, spans of the same text (ignoring case) add their scores, and the best wins;
- token classification: per-token argmax with softmax scores, grouped into entities by the
  token-classification pipeline's "simple" aggregation (B- starts an entity, I- of the same type
  continues it, "O" is dropped);
- embeddings: the graph's mean pooling over real tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from NNDF.kinds.encoder_only.inputs import Batch
from NNDF.kinds.encoder_only.tasks import TOP_K_IMAGES, Task, bio_tag
from NNDF.runtime.generation import softmax

if TYPE_CHECKING:   # annotations only
    from NNDF.kinds.encoder_only.model import EncoderModel

MAX_ANSWER_TOKENS = 15        # the question-answering pipeline's max_answer_len

QA_CANDIDATES = 12            # the spans it ranks before aligning to words: top_k * 2 + 10, top_k 1

NO_ENTITIES = "(no entities)"


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
        bi, tag = bio_tag(t["entity"])
        if current and tag == bio_tag(current[-1]["entity"])[1] and bi != "B":
            current.append(t)
            continue
        if current:
            groups.append(current)
        current = [t]
    if current:
        groups.append(current)
    entities = []
    for g in groups:
        group = bio_tag(g[0]["entity"])[1]
        if group == "O":
            continue
        entities.append({"entity_group": group, "score": float(np.mean([t["score"] for t in g])),
                         "word": loaded.tokenizer.convert_tokens_to_string([t["token"] for t in g]),
                         "start": g[0]["start"], "end": g[-1]["end"]})
    return {"label": entity_label(entities), "entities": entities}


def entity_label(entities: list[dict]) -> str:
    """"Anna (PER), Paris (LOC)": how run shows entities and how checkpoint labels write them."""
    return ", ".join(f"{e['word']} ({e['entity_group']})" for e in entities) or NO_ENTITIES
