"""Interactive prompts; with several backends (`--compare a b` or listed) each answers in turn."""

from __future__ import annotations

import sys
import time

from NNDF.actions.common import identity, label
from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.errors import UsageError
from NNDF.family import LoadedModel

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


def run(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], stdin=None) -> dict:
    stdin = stdin or sys.stdin
    as_prompt = loaded.chat_prompt(cfg)   # e.g. image-to-text: a line is a caption prefix for --image
    print(f"chat with {loaded.variant} on {', '.join(b.name for b in backends)}; type 'exit' or press Ctrl-D to stop",
          flush=True)
    turns = []
    try:
        while True:
            print("> ", end="", flush=True)
            line = read_line(stdin)
            if not line or (isinstance(line, str) and line.strip().lower() in EXIT_WORDS):
                break
            try:  # one bad line should not end the conversation
                prompt = as_prompt(as_text(line).rstrip("\n"))
                if prompt is None:
                    continue
                ids, mask = loaded.encode_prompts([prompt], False, cfg.generation.max_new_tokens)
            except UsageError as e:
                print(f"error: {e}", flush=True)
                continue
            except Exception as e:  # tokenizers raise their own types for input they cannot take
                print(f"error: the tokenizer cannot encode this line ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no detail'}); "
                      "type another line", flush=True)
                continue
            turn = {"input": prompt, "outputs": {}}
            for backend in backends:
                start = time.perf_counter()
                out = backend.generate(ids, mask, cfg.generation)
                seconds = time.perf_counter() - start
                text = loaded.output_text(prompt, out.tokens[0])
                turn["outputs"][backend.name] = {"output": text, "seconds": seconds, **identity(backend)}
                prefix = f"[{label(backend)} {seconds * 1e3:.0f} ms] " if len(backends) > 1 else ""
                print(f"{prefix}{text}", flush=True)
            turns.append(turn)
    except KeyboardInterrupt:
        print("", flush=True)
    print("bye", flush=True)
    return {"action": "chat", "turns": turns}
