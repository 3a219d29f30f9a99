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

from NNDF.backends import Backend
from NNDF.config import GenerationSettings
from NNDF.decoder_only import CompiledDecoderOnly
from NNDF.errors import UsageError
from NNDF.family import LoadedModel


@dataclass(frozen=True)
class RequestInput:
    """An optional request input and the generation setting it sets."""

    name: str
    triton_type: str          # KServe v2 datatype, e.g. "INT32"
    dtype: type
    setting: str              # GenerationSettings field
    minimum: float


# Optional inputs beside `text`. Sampling settings (temperature, top_k, ...) join this table
# once GenerationSettings has them; config.pbtxt and request checks are generated from it.
OPTIONAL_INPUTS = (
    RequestInput("max_new_tokens", "INT32", np.int32, "max_new_tokens", 1),
    RequestInput("num_beams", "INT32", np.int32, "num_beams", 1),
)
MAX_BEAMS = 16


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
        if number < spec.minimum:
            raise UsageError(f"{spec.name} must be at least {spec.minimum:g}, got {number}")
        settings = replace(settings, **{spec.setting: number})
    if settings.num_beams > MAX_BEAMS:
        raise UsageError(f"num_beams must be at most {MAX_BEAMS}, got {settings.num_beams}")
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
    """
    settings = request.settings
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
def can_stream(backend: Backend) -> bool:
    """Streaming watches the shared generation loop, which the compiled decoder-only backends (onnxrt, trt) run."""
    return isinstance(backend, CompiledDecoderOnly)


class _WatchedSteps:
    """Passes the generation loop's calls to a StepModel and reports each token the loop chose.

    The loop feeds every step all tokens so far, so the token chosen by step k is the last
    column of step k+1's input: reporting it there needs no change to the loop itself.
    """

    def __init__(self, inner, on_token: Callable[[int], None]):
        self.inner, self.on_token = inner, on_token
        self.prompt_len = 0

    def plan(self, rows, prompt_len, new_tokens):
        self.inner.plan(rows, prompt_len, new_tokens)

    def start(self, input_ids, attention_mask):
        state, seq, mask = self.inner.start(input_ids, attention_mask)
        self.prompt_len = seq.shape[1]
        return state, seq, mask

    def step(self, state, decoder_ids, attention_mask):
        if decoder_ids.shape[1] > self.prompt_len:
            self.on_token(int(decoder_ids[0, -1]))
        return self.inner.step(state, decoder_ids, attention_mask)

    def reorder(self, state, beam_idx):
        self.inner.reorder(state, beam_idx)


def stream_answer(request: TextRequest, loaded: LoadedModel, backend: Backend, emit: Callable[[str], None]) -> None:
    """Greedy generation of one request, calling emit(piece) as text becomes final; the pieces joined
    are exactly the continuation the non-streaming answer adds to the prompt."""
    if request.settings.num_beams != 1:
        raise UsageError("streaming is greedy only", "send num_beams 1, or use the generate model for beam search")
    if loaded.model.config.is_encoder_decoder or not can_stream(backend):
        raise UsageError("streaming needs a decoder-only model on the onnxrt or trt backend")
    tokens: list[int] = []
    sent = ""

    def flush(final: bool) -> None:
        nonlocal sent
        text = loaded.output_text(request.prompt, tokens)[len(request.prompt):]
        # A byte-level token can end inside a UTF-8 character; wait for the rest before sending.
        if text.startswith(sent) and len(text) > len(sent) and (final or not text.endswith("\ufffd")):
            emit(text[len(sent):])
            sent = text

    def on_token(token: int) -> None:
        tokens.append(token)
        flush(final=False)

    ids, mask = loaded.encode_prompts([request.prompt], False, request.settings.max_new_tokens)
    steps = backend.steps
    backend.steps = _WatchedSteps(steps, on_token)   # a model instance runs one request at a time
    try:
        out = backend.generate(ids, mask, request.settings)
    finally:
        backend.steps = steps
    tokens[:] = [int(t) for t in out.tokens[0]]   # the last token is never fed back to a step
    flush(final=True)
