"""Reading a person's lines (chat): bytes where the stream has them, so one line that is not UTF-8
costs only that line; "exit" or "quit" ends the conversation."""

from __future__ import annotations

from NNDF.base.errors import UsageError

EXIT_WORDS = {"exit", "quit"}


def read_line(stdin) -> str | bytes:
    """The next line, as bytes where the stream has them, so a line that is not UTF-8 costs only
    that line (a text stream would raise on it and end the session)."""
    raw = getattr(stdin, "buffer", None)
    line = raw.readline() if raw is not None else stdin.readline()
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            return line   # reported by as_text, with the conversation going on
    return line


def as_text(line: str | bytes) -> str:
    if isinstance(line, bytes):
        raise UsageError("this line is not UTF-8 text", "type it again in UTF-8")
    return line
