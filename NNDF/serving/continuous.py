"""The continuous-batching scheduler: one thread owns a batch of rows of a decoder-only model (onnxrt, trt)
and decodes them together, step after step (NNDF/runtime/continuous.py holds the moves).

Between two decode steps (a step boundary) the scheduler
1. drops the rows that finished in the last step (EOS, a stop string, max_tokens) or whose client went
   away, so they cost nothing in the next step;
2. admits waiting jobs, oldest first, while rows are free (--max-batch-size) and their prompts add up to
   at most --max-prefill-tokens (one job is always admitted, however long), which bounds how long the
   running rows wait for newcomers; the prompts are prefilled in groups of similar lengths (left padding
   is computed too), and each newcomer's first token comes from its prefill, so a newcomer waits for at
   most one decode step and one prefill before its first token; a job whose first token already ends it
   (max_tokens 1, as lm-eval's scoring requests) never joins the batch;
3. regroups the cache once, when rows left or joined: the rows still running (those beyond their count
   filling the rows that left, so that a pooled cache moves as few rows as it can), then the newcomers;
4. runs one decode step for every row and hands each job its new text.

Jobs that score their prompt (echo with logprobs) need every position's logits from the prefill, which
costs a vocabulary projection per prompt token, so they are prefilled apart from the others.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import numpy as np

from NNDF.base.config import TokenIds
from NNDF.runtime.continuous import BatchDecoder, RowCache, RowChooser, filled_holes, logprobs_of
from NNDF.runtime.placement import torch_threads
from NNDF.serving.jobs import AnswerText, Failed, Finished, Job, PromptScored, Scheduler, Tokens


PADDING_ALLOWANCE = 1.25   # a prefill group's padded tokens may exceed its real ones by this much


def prefill_groups(jobs: list[Job]) -> list[list[Job]]:
    """Newcomers in groups prefilled together: jobs scoring their prompt apart from the others, and prompts of
    similar lengths together, so that left padding (computed, then masked) wastes little work."""
    groups = []
    for scores_prompt in (False, True):
        group: list[Job] = []
        for job in sorted((j for j in jobs if j.scores_prompt == scores_prompt), key=lambda j: len(j.prompt)):
            padded = (len(group) + 1) * len(job.prompt)
            if group and padded > PADDING_ALLOWANCE * (sum(len(j.prompt) for j in group) + len(job.prompt)):
                groups.append(group)
                group = []
            group.append(job)
        if group:
            groups.append(group)
    return groups


@dataclass
class Row:
    job: Job
    chooser: RowChooser
    text: AnswerText
    done: bool = False

    @property
    def last(self) -> int:
        return self.chooser.tokens[-1]


class ContinuousScheduler(Scheduler):
    def __init__(self, decoder: BatchDecoder, token_ids: TokenIds, tokenizer, max_rows: int, max_queue: int,
                 max_prefill_tokens: int):
        super().__init__(max_queue, "continuous-batching")
        self.decoder, self.token_ids, self.tokenizer = decoder, token_ids, tokenizer
        self.max_rows, self.max_prefill_tokens = max_rows, max_prefill_tokens
        self._rows: list[Row] = []           # the cache's rows, in its order (finished ones until the boundary)
        self._cache: RowCache | None = None
        self.steps = 0                       # decode steps run (tests and the benchmark read them)

    def running(self) -> int:
        return sum(not r.done for r in self._rows)

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        with torch_threads(1):    # torch's threads would fight ONNX Runtime's on a small machine
            while True:
                with self._wake:
                    if not self._waiting and not self.running():
                        self._rows, self._cache = [], None     # nothing to keep while idle
                    while not self._waiting and not self.running() and not self._stopping:
                        self._wake.wait()
                    if self._stopping and not self._waiting and not self.running():
                        return
                self.step_once()

    def step_once(self) -> None:
        """One turn of the loop: a step boundary, then a decode step if any row runs. A failed step fails
        the jobs in it, and the scheduler goes on. Tests drive it directly, without the thread."""
        for row in self._rows:     # a client that went away frees its row for this very boundary
            if not row.done and row.job.cancelled.is_set():
                self._finish(row, "cancelled")
        with self._wake:
            newcomers = self._admit()
        try:
            self._boundary(newcomers)
            if self._rows:
                self._decode()
        except Exception as e:
            traceback.print_exc()
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            message = f"generation failed: {type(e).__name__}: {detail}"
            for job in [r.job for r in self._rows] + newcomers:
                job.end(Failed(message))
            self._rows, self._cache = [], None

    def _admit(self) -> list[Job]:
        """Waiting jobs for the free rows, oldest first, within the prefill budget (called under the lock)."""
        chosen: list[Job] = []
        free = self.max_rows - self.running()
        while self._waiting and len(chosen) < free:
            job = self._waiting[0]
            if job.cancelled.is_set():
                self._waiting.popleft()
                job.end(Finished("cancelled", len(job.prompt), 0))
                continue
            if chosen and sum(len(j.prompt) for j in chosen) + len(job.prompt) > self.max_prefill_tokens:
                break
            chosen.append(self._waiting.popleft())
        return chosen

    def _boundary(self, newcomers: list[Job]) -> None:
        kept = filled_holes([not row.done for row in self._rows])     # rows stay where they are where they can
        parts = [] if self._cache is None else [(self._cache, kept)]
        rows = [self._rows[i] for i in kept]
        for group in prefill_groups(newcomers):
            cache, joining = self._prefill(group, group[0].scores_prompt)
            parts.append((cache, [i for i, _ in joining]))
            rows += [row for _, row in joining]
        if len(rows) != len(self._rows) or any(r is not s for r, s in zip(rows, self._rows)):
            self._cache = self.decoder.regroup(parts) if rows else None
            self._rows = rows

    def _prefill(self, jobs: list[Job], all_logits: bool) -> tuple[RowCache, list[tuple[int, Row]]]:
        """Prefill jobs together and choose their first tokens; the rows that go on decoding, by cache row."""
        prefilled = self.decoder.prefill([j.prompt for j in jobs], all_logits)
        joining = []
        for i, job in enumerate(jobs):
            logits = prefilled.logits[i]
            if all_logits:
                top = job.logprobs or 0
                scored = logprobs_of(logits[:-1], job.prompt[1:], top) if len(job.prompt) > 1 else []
                job.emit(PromptScored([None, *scored]))
                logits = logits[-1]
            row = Row(job, RowChooser(job.prompt, job.settings, self.token_ids), AnswerText(self.tokenizer, job.stop))
            if job.settings.max_new_tokens == 0:
                self._finish(row, "length")
                continue
            self._advance(row, logits)
            if not row.done:
                joining.append((i, row))
        return prefilled.cache, joining

    def _decode(self) -> None:
        self._cache, logits = self.decoder.step(self._cache, np.array([r.last for r in self._rows], np.int64))
        self.steps += 1
        for row, row_logits in zip(self._rows, logits):
            self._advance(row, row_logits)

    def _advance(self, row: Row, logits: np.ndarray) -> None:
        """Choose the row's next token from its logits and tell its job; end the row if that finished it."""
        token = row.chooser.choose(logits)
        job, eos = row.job, self.token_ids.eos
        scored = tuple(logprobs_of(logits, [token], job.logprobs)) if job.logprobs is not None else ()
        text = "" if token == eos else row.text.add(token)
        job.emit(Tokens(text, (token,), scored))
        if token == eos or row.text.stopped:
            self._finish(row, "stop")
        elif row.chooser.generated >= job.settings.max_new_tokens:
            self._finish(row, "length")

    def _finish(self, row: Row, reason: str) -> None:
        rest = row.text.finish() if reason != "cancelled" else ""
        if rest:
            row.job.emit(Tokens(rest, ()))
        row.done = True
        row.job.end(Finished(reason, len(row.job.prompt), row.chooser.generated))
