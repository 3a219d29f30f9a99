"""What a server's scheduler is handed and what it hands back, apart from any HTTP.

A `Job` is one sequence to generate: its prompt as token ids, its settings and stop strings, and
`emit`, which the scheduler's thread calls with the job's events in order: `PromptScored` (only for
echo with logprobs), `Tokens` (new text as it becomes final), then one `Finished` or `Failed`.
`AnswerText` turns the job's tokens into that text: it holds back what could still change (an
incomplete UTF-8 character, or the start of a stop string) and cuts the answer before a stop string.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from NNDF.base.config import GenerationSettings
from NNDF.models.tokenizers import decode_safely
from NNDF.runtime.continuous import TokenLogprob


class QueueFull(Exception):
    """More requests wait than --max-queue allows (HTTP 503)."""


@dataclass(frozen=True)
class PromptScored:
    logprobs: list[TokenLogprob | None]    # per prompt token; the first has nothing before it (None)


@dataclass(frozen=True)
class Tokens:
    text: str                              # text that became final with these tokens ("" while held back)
    tokens: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()   # one per token when the job asked for logprobs


@dataclass(frozen=True)
class Finished:
    reason: str                            # "stop" (EOS or a stop string), "length", "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = PromptScored | Tokens | Finished | Failed


@dataclass
class Job:
    prompt: list[int]
    settings: GenerationSettings           # max_new_tokens is the request's max_tokens
    emit: Callable[[Event], None]
    stop: tuple[str, ...] = ()
    logprobs: int | None = None            # None: no log-probabilities; n: each token's and the n best
    echo: bool = False                     # with logprobs: the prompt's tokens scored too
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)   # the client went away
    ended: bool = False                    # its Finished or Failed was sent

    def end(self, event: Finished | Failed) -> None:
        """Send the job's last event (once: a job that ended stays ended)."""
        if not self.ended:
            self.ended = True
            self.emit(event)

    @property
    def scores_prompt(self) -> bool:
        return self.echo and self.logprobs is not None


class Scheduler:
    """What the HTTP side sees of a scheduler (continuous.py, arrivals.py): a queue of jobs, bounded by
    --max-queue, and the thread that answers them (the subclass's `_loop`)."""

    def __init__(self, max_queue: int, name: str):
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue all of them, or raise QueueFull and queue none."""
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is stopping")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting, and --max-queue is {self.max_queue}")
            self._waiting.extend(jobs)
            self._wake.notify()

    def running(self) -> int:
        raise NotImplementedError

    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued and running, then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _loop(self) -> None:
        raise NotImplementedError


class AnswerText:
    """The text of a job's new tokens, released only where it can no longer change."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.tokens: list[int] = []
        self.sent = ""          # what was released
        self.stopped = False    # a stop string ended the answer

    def add(self, token: int) -> str:
        """Take one new token; the text that became final with it."""
        self.tokens.append(int(token))
        text = decode_safely(self.tokenizer, self.tokens)
        cut = self._stop_at(text)
        if cut is not None:
            self.stopped = True
            return self._release(text[:cut])
        stable = text.rstrip("\ufffd")    # an incomplete character decodes as U+FFFD until its last byte
        return self._release(stable[: len(stable) - self._held_back(stable)])

    def finish(self) -> str:
        """The rest of the answer when it ends for another reason than a stop string."""
        if self.stopped:
            return ""
        return self._release(decode_safely(self.tokenizer, self.tokens))

    def _stop_at(self, text: str) -> int | None:
        found = [i for i in (text.find(s, max(0, len(self.sent) - len(s) + 1)) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        """Characters at the end of `text` that begin some stop string (it may follow in the next tokens)."""
        return max((k for s in self.stop for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
                   default=0)

    def _release(self, text: str) -> str:
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""
        piece, self.sent = text[len(self.sent):], text
        return piece
