"""Batching per arrival, for the models continuous batching does not cover: encoder-decoders (T5, BART),
the frameworks backend (HF generate), and decoder graphs without a KV cache.

One thread takes the jobs waiting when it is free (up to --max-batch-size) and generates them
through the backend's own generate, in groups that can share a batch without changing any answer
(the rule of NNDF/serving/requests.py: greedy jobs that differ only in max_tokens share one; a sampled
job runs alone, since the generation loop's sampler draws for all rows from one seed; an
encoder-decoder batches prompts of equal length). A group runs to its longest job's end: a job that
finishes early (EOS, a stop string, its max_tokens) is answered at once, but its row is not freed,
and a client that goes away does not stop the batch it is in. Log-probabilities (decoder-only models)
come from one teacher-forced pass over the prompt and answer after generation.
"""

from __future__ import annotations

import traceback
from dataclasses import replace

import numpy as np

from NNDF.models.family import LoadedModel
from NNDF.models.tokenizers import pad_rows
from NNDF.runtime.backends import Backend
from NNDF.runtime.continuous import logprobs_of
from NNDF.serving.jobs import AnswerText, Failed, Finished, Job, PromptScored, Scheduler, Tokens


def group_key(job: Job, loaded: LoadedModel) -> tuple:
    settings = job.settings
    if settings.do_sample:
        return settings, id(job)
    if loaded.generation_defaults.get("forced_eos_token_id") is None:
        settings = replace(settings, max_new_tokens=0)
    return settings, len(job.prompt) if loaded.model.config.is_encoder_decoder else None


class ArrivalScheduler(Scheduler):
    def __init__(self, loaded: LoadedModel, backend: Backend, max_rows: int, max_queue: int):
        super().__init__(max_queue, "arrival-batching")
        self.loaded, self.backend, self.max_rows = loaded, backend, max_rows
        self._running = 0

    def running(self) -> int:
        return self._running

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._stopping:
                    self._wake.wait()
                if not self._waiting:
                    return
                jobs = []
                while self._waiting and len(jobs) < self.max_rows:
                    job = self._waiting.popleft()
                    if job.cancelled.is_set():
                        job.end(Finished("cancelled", len(job.prompt), 0))
                    else:
                        jobs.append(job)
                self._running = len(jobs)
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(group_key(job, self.loaded), []).append(job)
            for group in groups.values():
                try:
                    self._generate(group)
                except Exception as e:   # the group's jobs fail; the server goes on
                    traceback.print_exc()
                    for job in group:
                        job.end(Failed(f"generation failed: {type(e).__name__}: {str(e).strip()[:200]}"))
            self._running = 0

    def _generate(self, jobs: list[Job]) -> None:
        eos = self.loaded.token_ids.eos
        longest = max(j.settings.max_new_tokens for j in jobs)
        texts = [AnswerText(self.loaded.tokenizer, j.stop) for j in jobs]
        done = [j.settings.max_new_tokens == 0 for j in jobs]
        counts = [0] * len(jobs)
        held: list[list] = [[] for _ in jobs]     # events of jobs with logprobs, sent once they are computed

        def emit(i, event):
            if jobs[i].logprobs is not None:
                held[i].append(event)
            elif isinstance(event, Finished):
                jobs[i].end(event)
            else:
                jobs[i].emit(event)

        def on_step(tokens):
            for i, token in enumerate(np.asarray(tokens).reshape(-1)[: len(jobs)].tolist()):
                if done[i]:
                    continue
                counts[i] += 1
                text = "" if token == eos else texts[i].add(token)
                emit(i, Tokens(text, (int(token),)))
                if token == eos or texts[i].stopped or counts[i] >= jobs[i].settings.max_new_tokens:
                    done[i] = True
                    rest = texts[i].finish() if token != eos else ""
                    if rest:
                        emit(i, Tokens(rest, ()))
                    emit(i, Finished("stop" if token == eos or texts[i].stopped else "length", len(jobs[i].prompt),
                                     counts[i]))

        if longest > 0:
            ids, mask = pad_rows([j.prompt for j in jobs], self._pad(), "left")
            self.backend.generate(ids, mask, replace(jobs[0].settings, max_new_tokens=longest), on_step=on_step)
        for i, job in enumerate(jobs):
            if not done[i]:   # ran out of steps without a token for it (max_tokens 0)
                rest = texts[i].finish()
                if rest:
                    emit(i, Tokens(rest, ()))
                emit(i, Finished("length", len(job.prompt), counts[i]))
            if job.logprobs is not None:
                self._send_with_logprobs(job, held[i])

    def _pad(self) -> int:
        pad = self.loaded.tokenizer.pad_token_id
        return self.loaded.generation_defaults["pad_token_id"] if pad is None else pad

    def _send_with_logprobs(self, job: Job, events: list) -> None:
        """A decoder-only job's events, each token's with its log-probabilities from one pass over the
        prompt and answer (the prompt's too, for echo)."""
        answer = [t for e in events if isinstance(e, Tokens) for t in e.tokens]
        sequence = np.array([job.prompt + answer], np.int64)
        logits = self.backend.logits(sequence, np.ones_like(sequence))[0]
        top = job.logprobs or 0
        if job.echo:
            job.emit(PromptScored([None, *logprobs_of(logits[: len(job.prompt) - 1], job.prompt[1:], top)]))
        scored = iter(logprobs_of(logits[len(job.prompt) - 1: len(sequence[0]) - 1], answer, top))
        for event in events:
            if isinstance(event, Tokens):
                event = Tokens(event.text, event.tokens, tuple(next(scored) for _ in event.tokens))
            (job.end if isinstance(event, Finished) else job.emit)(event)
