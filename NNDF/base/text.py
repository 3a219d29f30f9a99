"""Text as the original demo normalised it, so its files and datasets read the same here."""

from __future__ import annotations

CURLY_TO_STRAIGHT = (("“", '"'), ("”", '"'), ("’", "'"), ("‘", "'"), ("`", "'"))


def normalize_text(text: str) -> str:
    """The demo's process_text: straight quotes, and the escapes its files write literally
    (a backslash-n is a newline, an escaped quote a quote)."""
    for curly, straight in CURLY_TO_STRAIGHT:
        text = text.replace(curly, straight)
    return text.replace("\\n", "\n").replace('\\\\"', '"').replace('\\"', '"')
