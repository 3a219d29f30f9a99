"""What an encoder's head does (`Task`), and the names answers, metrics and datasets share."""

from __future__ import annotations

import enum


class Task(str, enum.Enum):
    """What a head does; the value is the HuggingFace pipeline task of the same meaning."""

    SEQUENCE_CLASSIFICATION = "text-classification"
    QUESTION_ANSWERING = "question-answering"
    TOKEN_CLASSIFICATION = "token-classification"
    EMBEDDINGS = "feature-extraction"          # the encoder alone, mean-pooled over real tokens
    IMAGE_CLASSIFICATION = "image-classification"


TOP_K_IMAGES = 5              # image classification: the classes an answer lists, and top-5 accuracy


def auto_class(task: Task):
    """The transformers Auto class that loads a checkpoint with this task's head."""
    import transformers

    return getattr(transformers, {
        Task.SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
        Task.QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
        Task.TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
        Task.EMBEDDINGS: "AutoModel",
        Task.IMAGE_CLASSIFICATION: "AutoModelForImageClassification",
    }[task])


def bio_tag(name: str) -> tuple[str, str]:
    """A BIO tag as (B or I, entity type): "B-PER" -> ("B", "PER"); a bare type counts as inside."""
    if name.startswith(("B-", "I-")):
        return name[0], name[2:]
    return "I", name
