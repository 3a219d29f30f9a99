"""Interactive prompts. Answers stream as they are generated (greedy and sampling; beam
search prints its answer when it ends); with several backends (`--compare a b` or listed)
every backend answers in turn, each with its time."""

from __future__ import annotations

import sys
import time

from NNDF.actions.action import Action
from NNDF.actions.console import EXIT_WORDS, as_text, read_line
from NNDF.actions.reporting import identity, label
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.models.family import LoadedModel
from NNDF.models.text_stream import TextStream
from NNDF.runtime.backends import Backend
from NNDF.runtime.memory import Workload


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


def converse(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], stdin=None, out=None) -> dict:
    """Prompts from `stdin` (sys.stdin) until EOF, 'exit' or Ctrl-C; answers streamed to `out` (sys.stdout)."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    as_prompt = loaded.chat_prompt(cfg)   # e.g. image-to-text: a line is a caption prefix for --image
    print(f"chat with {loaded.variant} on {', '.join(b.name for b in backends)}; type 'exit' or press Ctrl-D to stop",
          file=out, flush=True)
    hint = loaded.chat_hint(cfg)
    if hint:
        print(hint, file=out, flush=True)
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


class Chat(Action):
    """`chat` for generating models: one prompt per line, every backend answering in turn."""

    def workload(self, cfg: RunConfig, family, loaded) -> Workload:
        return Workload(cfg.generation.num_beams, None, cfg.generation.max_new_tokens)   # one prompt at a time

    def check_loaded(self, cfg: RunConfig, family, loaded) -> None:
        super().check_loaded(cfg, family, loaded)
        loaded.chat_prompt(cfg)     # what a line becomes: a given --image is read here, before any export

    def run(self, cfg: RunConfig, family, loaded, backends: list[Backend]) -> dict:
        return converse(cfg, loaded, backends)
