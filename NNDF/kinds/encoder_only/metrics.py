"""Each encoder task's metric over a dataset: classification accuracy, image top-1/top-5, SQuAD's
exact match and F1, seqeval's entity F1, and embeddings' cosine agreement with a reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import re
import string
from collections import Counter

import numpy as np

from NNDF.kinds.encoder_only.tasks import TOP_K_IMAGES, Task

if TYPE_CHECKING:   # annotations only
    from NNDF.kinds.encoder_only.model import EncoderModel

PRIMARY_METRIC = {Task.SEQUENCE_CLASSIFICATION: "accuracy", Task.IMAGE_CLASSIFICATION: "top_1",
                  Task.QUESTION_ANSWERING: "f1", Task.TOKEN_CLASSIFICATION: "entity_f1",
                  Task.EMBEDDINGS: "cosine_mean"}


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
