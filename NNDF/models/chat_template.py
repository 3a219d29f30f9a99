"""Chat messages -> one prompt, through a chat template: the tokenizer's own (`chat_template`, as HF's
`apply_chat_template` reads it) or one given with --chat-template FILE, which sets or overrides it.

A model without either has no chat format, and nothing here guesses one: callers refuse the
request (HTTP 400) or, in `chat`, fall back to continuing each line as plain text. The generation
prompt (the assistant's turn) is always added. The rendered prompt is tokenized without the
tokenizer's own special tokens, since the template writes the ones the model expects (a BOS, say).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from NNDF.base.errors import UsageError

# What the tiny offline Llama-style variants ship (the turn markers of TinyLlama-Chat's Zephyr format,
# with the tokenizer's own end-of-text token closing each turn), so chat works offline with them.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class NoChatTemplate(UsageError):
    """The model has no chat template and none was given."""


def with_tiny_template(model, tokenizer):
    """(model, tokenizer) of a tiny variant, the tokenizer given TINY_CHAT_TEMPLATE."""
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return model, tokenizer


def read_template(path: Path) -> str:
    """A --chat-template file, checked to be a Jinja template now rather than at the first message."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--chat-template {path} cannot be read ({getattr(e, 'strerror', None) or e})",
                         "point it at a UTF-8 Jinja file") from None
    if not text.strip():
        raise UsageError(f"--chat-template {path} is empty", "point it at a Jinja chat template")
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment().parse(text)
    except TemplateSyntaxError as e:
        raise UsageError(f"--chat-template {path} is not a valid Jinja template (line {e.lineno}: {e.message})",
                         "fix the template") from None
    return text


def template_for(tokenizer, path: Path | None) -> str | None:
    """The chat template in force: the --chat-template file's, else the tokenizer's own, else None."""
    if path is not None:
        return read_template(path)
    own = getattr(tokenizer, "chat_template", None)
    return own if isinstance(own, str) and own.strip() else None


def format_chat(tokenizer, messages: Sequence[dict], template: str) -> str:
    """`messages` formatted by `template`, the assistant's turn opened; tokenize it without special tokens."""
    try:
        return tokenizer.apply_chat_template(list(messages), chat_template=template, add_generation_prompt=True,
                                             tokenize=False)
    except Exception as e:   # a template may raise anything (jinja's raise_exception included)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"the chat template could not format these messages: {first}") from None


def chat_prompt_ids(tokenizer, messages: Sequence[dict], template: str | None, model_name: str) -> list[int]:
    """Token ids of `messages` formatted by `template` with the assistant's turn opened."""
    if template is None:
        raise NoChatTemplate(f"{model_name} has no chat template, so chat messages cannot be formatted for it",
                             "start the server with --chat-template FILE, or send plain prompts to /v1/completions")
    return tokenizer(format_chat(tokenizer, messages, template), add_special_tokens=False)["input_ids"]
