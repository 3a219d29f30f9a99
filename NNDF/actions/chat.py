"""Interactive prompts; with --compare every backend answers side by side."""

from __future__ import annotations

import sys
import time

from NNDF.actions.common import identity, label
from NNDF.backends import Backend
from NNDF.config import RunConfig
from NNDF.errors import UsageError
from NNDF.family import LoadedModel

EXIT_WORDS = {"exit", "quit"}


def run(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], stdin=None) -> dict:
    stdin = stdin or sys.stdin
    if len(backends) > 1 and not cfg.chat_compare:
        raise UsageError("chat with several backends needs --compare", "add --compare or list one backend")
    as_prompt = loaded.chat_prompt(cfg)   # e.g. image-to-text: a line is a caption prefix for --image
    print(f"chat with {loaded.variant} on {', '.join(b.name for b in backends)}; type 'exit' or press Ctrl-D to stop",
          flush=True)
    turns = []
    try:
        while True:
            print("> ", end="", flush=True)
            line = stdin.readline()
            if not line or line.strip().lower() in EXIT_WORDS:
                break
            prompt = as_prompt(line.rstrip("\n"))
            if prompt is None:
                continue
            try:
                ids, mask = loaded.encode_prompts([prompt], False, cfg.generation.max_new_tokens)
            except UsageError as e:  # one bad prompt should not end the conversation
                print(f"error: {e}", flush=True)
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
