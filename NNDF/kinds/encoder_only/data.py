"""Encoder examples: parsed from chat lines and checkpoint inputs, and read from a task's JSONL
dataset with every field checked (one line naming the first bad one).

Examples are dicts: {"text"}, {"question", "context"}, {"image"}, with an optional "label"
(class name, answer text, entity list, class name) or "answers" / "spans" in datasets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

from NNDF.base.errors import UsageError
from NNDF.kinds.encoder_only.tasks import Task, bio_tag
from NNDF.models.data_checks import read_jsonl, type_name

if TYPE_CHECKING:   # annotations only
    from NNDF.kinds.encoder_only.model import EncoderModel

QA_SEPARATOR = "|||"          # chat and --dataset-less inputs: "question ||| context" is one QA example

DATASET_FIELDS = {
    Task.SEQUENCE_CLASSIFICATION: '{"text": ..., "label": CLASS NAME}',
    Task.QUESTION_ANSWERING: '{"question": ..., "context": ..., "answers": [ANSWER, ...]}',
    Task.TOKEN_CLASSIFICATION: '{"tokens": [WORD, ...], "tags": [BIO TAG, ...]}',
    Task.EMBEDDINGS: '{"text": ...}',
    Task.IMAGE_CLASSIFICATION: '{"image": PATH, "label": CLASS NAME}',
}


def check_qa(example: dict) -> None:
    if not str(example.get("context") or "").strip():
        raise UsageError(f"question {example.get('question', '')!r} has no context to find its answer in",
                         'give each question a context (checkpoint: context = "..."; chat: the first line; '
                         f'a line "QUESTION {QA_SEPARATOR} CONTEXT")')
    if not str(example.get("question") or "").strip():
        raise UsageError("a question-answering example has a context but no question", "add the question")


def parse_line(loaded: EncoderModel, line: str, context: str | None = None) -> dict:
    """A chat line (or --checkpoint input) as an example: text, an image path, or a QA question
    (with the chat's context, or written "QUESTION ||| CONTEXT")."""
    if loaded.is_image:
        return {"image": line.strip()}
    if loaded.task is Task.QUESTION_ANSWERING:
        question, sep, inline = line.partition(QA_SEPARATOR)
        return {"question": question.strip(), "context": inline.strip() if sep else context}
    return {"text": line}


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
        bi, kind = bio_tag(tag) if tag != "O" else ("O", "O")
        if open_span and (bi != "I" or kind != open_span[0]):
            spans.add(open_span)
            open_span = None
        if bi == "B" or (bi == "I" and open_span is None):
            open_span = (kind, starts[i], starts[i] + len(tokens[i]))
        elif bi == "I" and open_span:
            open_span = (kind, open_span[1], starts[i] + len(tokens[i]))
    return text, spans
