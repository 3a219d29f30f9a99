"""The OpenAI API as this server speaks it, apart from HTTP: request bodies checked and turned into jobs,
and jobs' events turned into OpenAI's response and stream-chunk objects.

Requests (JSON bodies of /v1/completions and /v1/chat/completions) keep OpenAI's meaning: `prompt`
(a string, a list of token ids, or a list of either: one choice each, as lm-eval's local-completions
sends them), `messages`, `max_tokens` (completions: 16 when left out, as OpenAI's; chat: the rest of
the model's positions), `temperature` (1 when left out; 0 is greedy), `top_p`, `seed` (random when left
out), `stop`, `stream` (+ `stream_options.include_usage`), `n` (1 only), `logprobs` and `echo`
(completions, decoder-only models), and the extra fields `top_k` (0 or -1: off) and
`repetition_penalty`. Anything wrong is an `ApiError` that becomes OpenAI's error object.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from NNDF.base.config import GenerationSettings
from NNDF.base.errors import UsageError
from NNDF.models.chat_template import NoChatTemplate, chat_prompt_ids
from NNDF.runtime.continuous import TokenLogprob

COMPLETION_DEFAULT_MAX_TOKENS = 16      # OpenAI's legacy completions default
MAX_LOGPROBS = 20
MAX_STOPS = 16


class ApiError(Exception):
    """An OpenAI-style error: HTTP status and {"error": {"message", "type", "param", "code"}}."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             405: "invalid_request_error", 413: "invalid_request_error", 503: "server_error", 500: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ServedModel:
    """What the protocol needs to know of the model behind the server."""

    name: str                        # the id clients send as `model`
    tokenizer: Any
    max_positions: int
    vocab_size: int
    decoder_only: bool
    chat_template: str | None
    fits: Callable[[int, int], None] | None = None   # (prompt tokens, max_tokens): UsageError if the engine cannot
    created: int = field(default_factory=lambda: int(time.time()))

    def model_card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "hf-trt-toolkit",
                "max_model_len": self.max_positions}


@dataclass
class ParsedRequest:
    chat: bool
    prompts: list[list[int]]         # one job per prompt: its token ids
    texts: list[str]                 # each prompt as text (what echo puts before the answer)
    settings: GenerationSettings
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    echo: bool = False
    stream: bool = False
    include_usage: bool = False
    id: str = ""
    created: int = 0


# --------------------------------------------------------------------------- fields
_MISSING = object()


def _field(body: dict, name: str, kinds: tuple, default=None, what: str = ""):
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(400, f"'{name}' must be {what}, got {value!r}", name, "invalid_type")
    if not isinstance(value, kinds):
        raise ApiError(400, f"'{name}' must be {what}, got {type(value).__name__} {str(value)[:40]}", name,
                       "invalid_type")
    return value


def _number(body, name, default, low, high, low_open=False):
    value = _field(body, name, (int, float), default, "a number")
    if value is None:
        return None
    if (value <= low if low_open else value < low) or (high is not None and value > high):
        bounds = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
        raise ApiError(400, f"'{name}' must be {bounds}, got {value}", name, "invalid_value")
    return value


def _integer(body, name, default, low=None, high=None):
    value = _field(body, name, (int,), default, "an integer")
    if value is None:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = " and ".join(b for b in (f"at least {low}" if low is not None else "",
                                           f"at most {high}" if high is not None else "") if b)
        raise ApiError(400, f"'{name}' must be {bounds}, got {value}", name, "invalid_value")
    return value


def _refuse_unsupported(body: dict) -> None:
    for name, default in (("n", 1), ("best_of", 1)):
        value = body.get(name)
        if value is not None and value != default:
            raise ApiError(400, f"'{name}' must be 1: one choice per prompt is generated", name, "unsupported")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(400, f"'{name}' is not supported", name, "unsupported")
    if body.get("logit_bias"):
        raise ApiError(400, "'logit_bias' is not supported", "logit_bias", "unsupported")
    if body.get("suffix"):
        raise ApiError(400, "'suffix' is not supported", "suffix", "unsupported")
    if body.get("tools") or body.get("functions"):
        raise ApiError(400, "tools and functions are not supported", "tools", "unsupported")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type", "text") == "text"):
        raise ApiError(400, "only text responses are supported", "response_format", "unsupported")


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(400, "'stop' must be a string or a list of strings", "stop", "invalid_type")
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"'stop' may hold at most {MAX_STOPS} strings, got {len(stops)}", "stop", "invalid_value")
    if any(not s for s in stops):
        raise ApiError(400, "'stop' strings must not be empty", "stop", "invalid_value")
    return tuple(stops)


def _prompts(body: dict, model: ServedModel) -> list[tuple[list[int], str]]:
    """`prompt` as (token ids, text) per prompt: a string, a list of ids, or a list of strings or of id lists."""
    prompt = body.get("prompt", _MISSING)
    if prompt is _MISSING or prompt is None:
        raise ApiError(400, "'prompt' is required", "prompt", "missing")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(_is_id(t) for t in prompt)):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise ApiError(400, "'prompt' must be a string, a list of token ids, or a non-empty list of either",
                       "prompt", "invalid_type")
    out = []
    for item in items:
        if isinstance(item, str):
            ids, text = model.tokenizer(item)["input_ids"], item
        elif isinstance(item, list) and all(_is_id(t) for t in item):
            bad = [t for t in item if not 0 <= t < model.vocab_size]
            if bad:
                raise ApiError(400, f"token id {bad[0]} is outside the model's vocabulary (0..{model.vocab_size - 1})",
                               "prompt", "invalid_value")
            ids, text = list(item), model.tokenizer.decode(item)
        else:
            raise ApiError(400, "each prompt must be a string or a list of token ids", "prompt", "invalid_type")
        if not ids:
            raise ApiError(400, "a prompt must not be empty", "prompt", "invalid_value")
        out.append((ids, text))
    return out


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _messages_ids(body: dict, model: ServedModel) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", "messages",
                       "invalid_type" if messages is not None else "missing")
    plain = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a 'role'", "messages", "invalid_type")
        content = m.get("content")
        if isinstance(content, list):   # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", "messages", "unsupported")
            content = "".join(p["text"] for p in content)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or text parts", "messages", "invalid_type")
        plain.append({"role": m["role"], "content": content})
    try:
        ids = chat_prompt_ids(model.tokenizer, plain, model.chat_template, model.name)
    except NoChatTemplate as e:
        raise ApiError(400, str(e), "messages", "chat_template_missing") from None
    except UsageError as e:
        raise ApiError(400, str(e), "messages", "invalid_value") from None
    if not ids:
        raise ApiError(400, "the messages format to an empty prompt", "messages", "invalid_value")
    return ids


def parse(body: Any, model: ServedModel, chat: bool) -> ParsedRequest:
    """A request body -> the jobs' prompts and settings; ApiError for anything OpenAI would refuse."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'model' is required: the id of the served model (GET /v1/models)", "model", "missing")
    if name != model.name:
        raise ApiError(404, f"The model `{name}` does not exist; this server serves `{model.name}`", "model",
                       "model_not_found")
    _refuse_unsupported(body)
    prompts = [(_messages_ids(body, model), "")] if chat else _prompts(body, model)
    logprobs, echo = None, False
    if chat:
        if body.get("logprobs") or body.get("top_logprobs"):
            raise ApiError(400, "logprobs are supported on /v1/completions only", "logprobs", "unsupported")
        max_tokens = _integer(body, "max_completion_tokens", None, 1)
        max_tokens = _integer(body, "max_tokens", max_tokens, 1)
    else:
        logprobs = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
        echo = bool(_field(body, "echo", (bool,), False, "true or false"))
        max_tokens = _integer(body, "max_tokens", None, 0 if echo else 1)
    if (logprobs is not None or echo) and not model.decoder_only:
        raise ApiError(400, "logprobs and echo need a decoder-only model", "logprobs" if logprobs is not None else "echo",
                       "unsupported")
    temperature = _number(body, "temperature", 1.0, 0, 2)
    top_p = _number(body, "top_p", 1.0, 0, 1, low_open=True)
    top_k = _integer(body, "top_k", 0, -1)
    penalty = _number(body, "repetition_penalty", 1.0, 0, None, low_open=True)
    seed = _integer(body, "seed", None, -(2 ** 63), 2 ** 64 - 1)
    stream = bool(_field(body, "stream", (bool,), False, "true or false"))
    options = _field(body, "stream_options", (dict,), {}, "an object")
    stop = _stops(body)
    room = model.max_positions - max(len(p) for p, _ in prompts) if model.decoder_only else model.max_positions
    if max_tokens is None:
        max_tokens = max(1, min(COMPLETION_DEFAULT_MAX_TOKENS, room) if not chat else room)
    for ids, _ in prompts:
        _check_length(ids, max_tokens, model)
    settings = GenerationSettings(max_new_tokens=max_tokens, use_cache=True, do_sample=temperature > 0,
                                  temperature=float(temperature) if temperature > 0 else 1.0,
                                  top_k=max(top_k, 0), top_p=float(top_p), repetition_penalty=float(penalty),
                                  seed=(seed if seed is not None else secrets.randbits(63)) % 2 ** 64)
    return ParsedRequest(chat, [p for p, _ in prompts], [t for _, t in prompts], settings, stop, logprobs, echo, stream,
                         bool(options.get("include_usage")) if stream else False,
                         f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time()))


def _check_length(ids: list[int], max_tokens: int, model: ServedModel) -> None:
    if model.decoder_only and len(ids) + max_tokens > model.max_positions:
        raise ApiError(400, f"This model's maximum context length is {model.max_positions} tokens. However, you "
                            f"requested {len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the "
                            "completion). Please reduce the prompt or max_tokens.", "max_tokens" if len(ids) <
                       model.max_positions else "prompt", "context_length_exceeded")
    if not model.decoder_only and (len(ids) > model.max_positions or max_tokens > model.max_positions):
        what, n = ("prompt", len(ids)) if len(ids) > model.max_positions else ("max_tokens", max_tokens)
        raise ApiError(400, f"{what} of {n} tokens exceeds the model's {model.max_positions} positions", what,
                       "context_length_exceeded")
    if model.fits is not None:
        try:
            model.fits(len(ids), max_tokens)
        except UsageError as e:
            raise ApiError(400, str(e), "max_tokens", "context_length_exceeded") from None


# --------------------------------------------------------------------------- responses
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class LogprobsBuilder:
    """A completion choice's `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset."""

    def __init__(self, tokenizer, start_offset: int = 0):
        self.tokenizer = tokenizer
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict | None] = []
        self.text_offset: list[int] = []
        self._offset = start_offset

    def _text(self, token: int) -> str:
        return self.tokenizer.decode([int(token)])

    def add(self, token: int, scored: TokenLogprob | None) -> None:
        text = self._text(token)
        self.tokens.append(text)
        self.text_offset.append(self._offset)
        self._offset += len(text)
        if scored is None:
            self.token_logprobs.append(None)
            self.top_logprobs.append(None)
            return
        top: dict[str, float] = {}
        for candidate, value in scored.top:        # best first; a text two tokens share keeps the better value
            top.setdefault(self._text(candidate), value)
        top.setdefault(text, scored.logprob)       # the chosen token is always listed, as OpenAI does
        self.token_logprobs.append(scored.logprob)
        self.top_logprobs.append(top)

    def take(self) -> dict:
        """What was added since the last take (streaming) or in all (a whole response)."""
        out = {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs,
               "text_offset": self.text_offset}
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return out


def completion_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
            "finish_reason": finish_reason}


def response(request: ParsedRequest, model: ServedModel, choices: Sequence[dict], used: dict) -> dict:
    return {"id": request.id, "object": "chat.completion" if request.chat else "text_completion",
            "created": request.created, "model": model.name, "choices": list(choices), "usage": used}


def chunk(request: ParsedRequest, model: ServedModel, choices: Sequence[dict], used: dict | None = None) -> dict:
    out = {"id": request.id, "object": "chat.completion.chunk" if request.chat else "text_completion",
           "created": request.created, "model": model.name, "choices": list(choices)}
    if used is not None:
        out["usage"] = used
    return out


def chat_delta(index: int, content: str | None, finish_reason: str | None, first: bool = False) -> dict:
    delta = {"role": "assistant", "content": content or ""} if first else ({"content": content} if content else {})
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
