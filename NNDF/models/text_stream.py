"""An answer's text, piece by piece, as a generation's `on_step` reports tokens.

Used by `chat` (pieces printed) and the served `generate_stream` model (pieces sent as
responses). The whole answer is decoded again at every step and only what was added is
passed on: byte-level tokenizers can need several tokens for one character, and a decoder may
rewrite the end of the text (an incomplete character shows as U+FFFD until its last byte
arrives), so text is held back until it stops changing.
"""

from __future__ import annotations

from typing import Callable

from NNDF.models.family import LoadedModel


class TextStream:
    """emit(piece) for every piece of `loaded.output_text(prompt, tokens)` that became final.

    after_prompt: start after the text the model says with no new tokens (the prompt, for a
    decoder-only model), so the pieces joined are what the answer adds to that.
    """

    def __init__(self, loaded: LoadedModel, prompt: str, emit: Callable[[str], None], after_prompt: bool = False):
        self.loaded, self.prompt, self.emit = loaded, prompt, emit
        self.tokens: list[int] = []
        self.sent = loaded.output_text(prompt, []) if after_prompt else ""

    def on_step(self, tokens) -> None:
        """The generation loop's on_step: this step's token of the one row being streamed."""
        self.tokens.append(int(tokens[0]))
        self._send(self.loaded.output_text(self.prompt, self.tokens).rstrip("\ufffd"))

    def finish(self, text: str) -> bool:
        """Send the rest of the final answer `text`; False if what was sent is not a prefix of it
        (a decoder rewrote text already sent), and the caller must show the answer whole."""
        self._send(text)
        return text.startswith(self.sent)

    def _send(self, text: str) -> None:
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.emit(text[len(self.sent):])
            self.sent = text
