"""Interactive prompts. Answers stream as they are generated (greedy and sampling; beam
search prints its answer when it ends); with several backends (`--compare a b` or listed)
every backend answers in turn, each with its time."""

from __future__ import annotations

import sys
import time

from NNDF.actions.common import identity, label
from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.errors import UsageError
from NNDF.family import LoadedModel
from NNDF.text_stream import TextStream

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


def answer(backend: Backend, loaded: LoadedModel, cfg: RunConfig, prompt: str, encoded, with_time: bool, out) -> dict:
    """One backend's streamed answer to one prompt; with --compare its name comes first and its time last."""
    if with_time:
        print(f"[{label(backend)}] ", end="", file=out, flush=True)
    stream = TextStream(loaded, prompt, lambda piece: print(piece, end="", file=out, flush=True))
    start = time.perf_counter()
    result = backend.generate(*encoded, cfg.generation, on_step=stream.on_step)
    seconds = time.perf_counter() - start
    text = loaded.output_text(prompt, result.tokens[0])
    if not stream.finish(text):   # the final decode changed what was shown: show it whole
        print(f"\n{text}", end="", file=out)
    print(f"  ({seconds * 1e3:.0f} ms)" if with_time else "", file=out, flush=True)
    return {"output": text, "seconds": seconds, **identity(backend)}


def run(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], stdin=None, out=None) -> dict:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    as_prompt = loaded.chat_prompt(cfg)   # e.g. image-to-text: a line is a caption prefix for --image
    print(f"chat with {loaded.variant} on {', '.join(b.name for b in backends)}; type 'exit' or press Ctrl-D to stop",
          file=out, flush=True)
    turns = []
    try:
        while True:
            print("> ", end="", file=out, flush=True)
            line = read_line(stdin)
            if not line or (isinstance(line, str) and line.strip().lower() in EXIT_WORDS):
                break
            try:  # one bad line should not end the conversation
                prompt = as_prompt(as_text(line).rstrip("\n"))
                if prompt is None:
                    continue
                encoded = loaded.encode_prompts([prompt], False, cfg.generation.max_new_tokens)
            except UsageError as e:
                print(f"error: {e}", file=out, flush=True)
                continue
            except Exception as e:  # tokenizers raise their own types for input they cannot take
                print(f"error: the tokenizer cannot encode this line ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no detail'}); "
                      "type another line", file=out, flush=True)
                continue
            turn = {"input": prompt, "outputs": {}}
            for backend in backends:
                turn["outputs"][backend.name] = answer(backend, loaded, cfg, prompt, encoded, len(backends) > 1, out)
            turns.append(turn)
    except KeyboardInterrupt:
        print("", file=out, flush=True)
    print("bye", file=out, flush=True)
    return {"action": "chat", "turns": turns}
