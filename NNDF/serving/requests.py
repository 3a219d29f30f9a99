"""What the served `generate` model does with requests, apart from Triton itself.

Triton hands a model instance a list of requests (its dynamic batcher groups
them). Each is checked on its own, so a bad one gets its own error while the
others are answered; the good ones are generated together: requests whose
settings allow it share one left-padded batch with an attention mask, and each
gets token for token what it would get alone. Nothing here imports Triton, so
it is tested directly (tests/test_serve_requests.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from NNDF.base.config import GenerationSettings
from NNDF.base.errors import UsageError
from NNDF.models.family import LoadedModel
from NNDF.models.text_stream import TextStream
from NNDF.runtime.backends import Backend


@dataclass(frozen=True)
class RequestInput:
    """An optional request input, the generation setting it sets, and the values it accepts."""

    name: str
    triton_type: str          # KServe v2 datatype, e.g. "INT32"
    dtype: type
    setting: str              # GenerationSettings field
    minimum: float = 0
    maximum: float | None = None
    above_minimum: bool = False   # the minimum itself is refused (a temperature of 0)

    def check(self, number) -> None:
        low = number <= self.minimum if self.above_minimum else number < self.minimum
        if low:
            bound = f"above {self.minimum:g}" if self.above_minimum else f"at least {self.minimum:g}"
            raise UsageError(f"{self.name} must be {bound}, got {number}")
        if self.maximum is not None and number > self.maximum:
            raise UsageError(f"{self.name} must be at most {self.maximum:g}, got {number}")


# Optional inputs beside `text`, with HuggingFace's meaning (GenerationSettings); config.pbtxt,
# the client's inputs and the request checks are generated from this table.
OPTIONAL_INPUTS = (
    RequestInput("max_new_tokens", "INT32", np.int32, "max_new_tokens", 1),
    RequestInput("num_beams", "INT32", np.int32, "num_beams", 1, 16),
    RequestInput("do_sample", "BOOL", np.bool_, "do_sample"),
    RequestInput("temperature", "FP32", np.float32, "temperature", 0, above_minimum=True),
    RequestInput("top_k", "INT32", np.int32, "top_k", 0),
    RequestInput("top_p", "FP32", np.float32, "top_p", 0, 1, above_minimum=True),
    RequestInput("repetition_penalty", "FP32", np.float32, "repetition_penalty", 0, above_minimum=True),
    RequestInput("seed", "INT64", np.int64, "seed", 0, 2**63 - 1),
)


@dataclass(frozen=True)
class TextRequest:
    prompt: str
    prompt_tokens: int
    settings: GenerationSettings


def parse_request(inputs: dict[str, np.ndarray], loaded: LoadedModel, defaults: GenerationSettings) -> TextRequest:
    """One request's input tensors -> a checked TextRequest; anything wrong is a UsageError naming it."""
    text = inputs.get("text")
    if text is None:
        raise UsageError("the request has no 'text' input", "send the prompt as a BYTES tensor named text")
    if text.size != 1:
        raise UsageError(f"'text' holds {text.size} strings", "send one prompt per request")
    raw = text.reshape(-1)[0]
    try:
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise UsageError("'text' is not UTF-8") from None
    if not prompt:
        raise UsageError("'text' is empty", "send a prompt to continue")
    settings = defaults
    for spec in OPTIONAL_INPUTS:
        value = inputs.get(spec.name)
        if value is None:
            continue
        if value.size != 1:
            raise UsageError(f"'{spec.name}' holds {value.size} values", "send one value")
        number = value.reshape(-1)[0].item()
        spec.check(number)
        settings = replace(settings, **{spec.setting: number})
    if settings.do_sample and settings.num_beams > 1:
        raise UsageError("do_sample with num_beams above 1 would be beam sampling, which is not implemented",
                         "send num_beams 1 to sample, or do_sample false for beam search")
    try:
        ids, _ = loaded.encode_prompts([prompt], False, settings.max_new_tokens)
    except UsageError as e:   # empty, or too long for the model's positions; the fix is in the request
        raise UsageError(e.problem, "shorten the prompt or ask for fewer max_new_tokens") from None
    return TextRequest(prompt, ids.shape[1], settings)


def batch_key(request: TextRequest, loaded: LoadedModel) -> tuple:
    """Requests with equal keys are generated as one batch.

    Greedy rows never see each other (masks), and a shorter answer is a prefix of a longer one
    unless a forced last token or a minimum length ties the answer to its length, so greedy
    requests differing only in max_new_tokens share a batch. Beam search stops by length, so
    its requests batch only with equal settings. Encoder-decoders batch only prompts of equal
    length: a left-padded encoder input would move learned absolute positions (BART).
    A sampled request is generated alone: the sampler draws one number per row and step from
    the request's seed, so in a batch its draws would depend on the other rows, and one seed
    would no longer give one answer.
    """
    settings = request.settings
    if settings.do_sample:
        return settings, id(request)
    length_free = (settings.num_beams == 1 and settings.min_new_tokens == 0
                   and loaded.generation_defaults.get("forced_eos_token_id") is None)
    if length_free:
        settings = replace(settings, max_new_tokens=0)
    length = request.prompt_tokens if loaded.model.config.is_encoder_decoder else None
    return settings, length


def answer_together(requests: list[TextRequest], loaded: LoadedModel, backend: Backend) -> list[str]:
    """Generate requests sharing one batch_key as one batch; each answer cut to its own max_new_tokens."""
    longest = max(r.settings.max_new_tokens for r in requests)
    ids, mask = loaded.encode_prompts([r.prompt for r in requests], True, longest)
    out = backend.generate(ids, mask, replace(requests[0].settings, max_new_tokens=longest))
    return [loaded.output_text(r.prompt, out.tokens[i, : r.settings.max_new_tokens]) for i, r in enumerate(requests)]


def answer_all(requests: list[TextRequest], loaded: LoadedModel, backend: Backend,
               max_batch: int) -> list[str]:
    """Answers in request order, generating each group of compatible requests as batches of up to max_batch rows."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(batch_key(r, loaded), []).append(i)
    answers: list[str] = [""] * len(requests)
    for members in groups.values():
        rows_each = requests[members[0]].settings.num_beams
        per_batch = max(1, max_batch // rows_each)
        for start in range(0, len(members), per_batch):
            chunk = members[start:start + per_batch]
            for i, text in zip(chunk, answer_together([requests[i] for i in chunk], loaded, backend)):
                answers[i] = text
    return answers


# ----------------------------------------------------------------------------- streaming
def stream_answer(request: TextRequest, loaded: LoadedModel, backend: Backend, emit: Callable[[str], None]) -> None:
    """Generate one request (greedy or sampled), calling emit(piece) as text becomes final; the
    pieces joined are exactly what the non-streaming answer adds to the prompt (decoder-only
    models) or the answer itself (encoder-decoders)."""
    if request.settings.num_beams != 1:
        raise UsageError("streaming needs num_beams 1: beam search has no final tokens until it ends",
                         "use the generate model for beam search")
    ids, mask = loaded.encode_prompts([request.prompt], False, request.settings.max_new_tokens)
    stream = TextStream(loaded, request.prompt, emit, after_prompt=True)
    out = backend.generate(ids, mask, request.settings, on_step=stream.on_step)
    stream.finish(loaded.output_text(request.prompt, out.tokens[0]))
