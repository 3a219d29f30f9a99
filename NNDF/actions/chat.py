"""Interactive prompts. Answers stream as they are generated (greedy and sampling; beam
search prints its answer when it ends); with several backends (`--compare a b` or listed)
every backend answers in turn, each with its time.

Where the model has a chat template (its tokenizer's own, or --chat-template FILE), each line is a
user message formatted by it, the assistant's turn opened, and only the answer is printed; each line
is a conversation of its own, as every line was before. Without a template a line is text for the
model to continue, as it always was (a base model has no chat format to guess)."""

from __future__ import annotations

import sys
import time

from NNDF.actions.action import Action
from NNDF.actions.console import EXIT_WORDS, as_text, read_line
from NNDF.actions.reporting import identity, label
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.models.chat_template import format_chat, template_for
from NNDF.models.family import LoadedModel
from NNDF.models.text_stream import TextStream
from NNDF.runtime.backends import Backend
from NNDF.runtime.memory import Workload


def answer(backend: Backend, loaded: LoadedModel, cfg: RunConfig, prompt: str, encoded, with_time: bool, out,
           answer_only: bool = False) -> dict:
    """One backend's streamed answer to one prompt; with --compare its name comes first and its time last.
    answer_only: show (and return) what the model adds, not the prompt (a chat template's turn markers)."""
    if with_time:
        print(f"[{label(backend)}] ", end="", file=out, flush=True)
    stream = TextStream(loaded, prompt, lambda piece: print(piece, end="", file=out, flush=True), answer_only)
    start = time.perf_counter()
    result = backend.generate(*encoded, cfg.generation, on_step=stream.on_step)
    seconds = time.perf_counter() - start
    text = loaded.output_text(prompt, result.tokens[0])
    if not stream.finish(text):   # the final decode changed what was shown: show it whole
        print(f"\n{text}", end="", file=out)
    print(f"  ({seconds * 1e3:.0f} ms)" if with_time else "", file=out, flush=True)
    if answer_only:
        text = text[len(loaded.output_text(prompt, [])):]
    return {"output": text, "seconds": seconds, **identity(backend)}


def chat_template(cfg: RunConfig, loaded: LoadedModel) -> str | None:
    """The template lines are formatted with, or None (lines are continued as plain text)."""
    if type(loaded).encode_prompts is not LoadedModel.encode_prompts:    # image models: a line is a caption prefix
        if cfg.chat_template is not None:
            raise UsageError(f"--chat-template formats text prompts, and {loaded.variant} takes an image",
                             "drop --chat-template")
        return None
    return template_for(loaded.tokenizer, cfg.chat_template)


def converse(cfg: RunConfig, loaded: LoadedModel, backends: list[Backend], stdin=None, out=None) -> dict:
    """Prompts from `stdin` (sys.stdin) until EOF, 'exit' or Ctrl-C; answers streamed to `out` (sys.stdout)."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    as_prompt = loaded.chat_prompt(cfg)   # e.g. image-to-text: a line is a caption prefix for --image
    template = chat_template(cfg, loaded)
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
                said = prompt
                if template is not None:
                    prompt = format_chat(loaded.tokenizer, [{"role": "user", "content": prompt}], template)
                if template is None:
                    encoded = loaded.encode_prompts([prompt], False, cfg.generation.max_new_tokens)
                else:    # the template wrote the special tokens the model expects
                    encoded = loaded.encode_prompts([prompt], False, cfg.generation.max_new_tokens,
                                                    special_tokens=False)
            except UsageError as e:
                print(f"error: {e}", file=out, flush=True)
                continue
            except Exception as e:  # tokenizers raise their own types for input they cannot take
                print(f"error: the tokenizer cannot encode this line ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no detail'}); "
                      "type another line", file=out, flush=True)
                continue
            turn = {"input": said, "outputs": {}, **({"prompt": prompt} if template is not None else {})}
            for backend in backends:
                turn["outputs"][backend.name] = answer(backend, loaded, cfg, prompt, encoded, len(backends) > 1, out,
                                                       answer_only=template is not None)
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
        chat_template(cfg, loaded)  # a --chat-template that cannot be read or parsed: one line, before any export

    def run(self, cfg: RunConfig, family, loaded, backends: list[Backend]) -> dict:
        return converse(cfg, loaded, backends)
