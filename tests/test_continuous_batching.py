"""Continuous batching (NNDF/runtime/continuous.py, NNDF/serving/continuous.py), in process: jobs of mixed
prompt and answer lengths arrive at staggered steps, wait for rows, join the batch between decode
steps and leave it when they end; each gets token for token what the same request gets alone from the
generation loop, for every decoder-only family on onnxrt and on the TensorRT stand-in. The scheduler
is driven one turn at a time (`step_once`), so every arrival lands at a known step."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

from NNDF.base.config import GenerationSettings
from NNDF.runtime.continuous import batch_decoder, filled_holes, logprobs_of
from NNDF.runtime.generation import log_softmax
from NNDF.serving.arrivals import ArrivalScheduler
from NNDF.serving.continuous import ContinuousScheduler
from NNDF.serving.jobs import Finished, Job, PromptScored, QueueFull, Tokens
from NNDF.registry import get_family
from test_decoder_families import TINY, Tiny, get_tiny

ARCHS = ["gpt2", *TINY]
TRT_ARCHS = ["gpt2", "bloom", "llama", "gpt_neox", "opt"]
# (arrival step, prompt length, max_tokens, sampled): more jobs than rows, prompts longer than the prefill
# budget, answers from 1 token (ends at its prefill) to 40, arrivals while others decode
SCHEDULE = [(0, 5, 12, False), (0, 23, 3, False), (0, 2, 40, True), (1, 9, 1, False), (2, 40, 20, False),
            (3, 14, 30, True), (3, 7, 8, False), (9, 31, 16, False), (14, 3, 25, False), (30, 18, 10, True)]
MAX_ROWS, PREFILL_BUDGET = 3, 48


class TinyGpt2(Tiny):
    """gpt2-tiny the way test_decoder_families holds the other tiny decoders."""

    def __init__(self, workdir):
        self.arch, self.variant = "gpt2", "gpt2-tiny"
        self.family, self.workdir = get_family("GPT2"), workdir
        self.loaded = self.family.load(self.cfg())
        self._backends = {}


_GPT2: list[TinyGpt2] = []


def tiny_model(arch: str, workdir) -> Tiny:
    if arch != "gpt2":
        return get_tiny(arch, workdir)
    if not _GPT2:
        _GPT2.append(TinyGpt2(workdir))
    return _GPT2[0]


def compiled(tiny: Tiny, name: str, rows: int = MAX_ROWS):
    flags = ["--use-cache"] + (["--dynamic-batch", "--max-dynamic-batch", str(rows)] if name == "trt" else [])
    cfg = tiny.cfg(*flags, backends=(name,))
    return importlib.import_module(f"{tiny.family.package}.{name}").make_backend(tiny.loaded, cfg, tiny.workdir)


def prompt_of(tiny: Tiny, length: int, seed: int) -> list[int]:
    vocab = len(tiny.loaded.tokenizer)
    special = set(tiny.loaded.tokenizer.all_special_ids)
    rng = np.random.default_rng(seed)
    return [int(t) if t not in special else int(t) + 1 for t in rng.integers(3, vocab - 1, length)]


def settings_of(new: int, sampled: bool, seed: int) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=new, do_sample=sampled, temperature=0.8 if sampled else 1.0, top_k=0,
                              top_p=0.9 if sampled else 1.0, seed=seed)


def alone(backend, prompt: list[int], settings: GenerationSettings, eos) -> list[int]:
    """The request on its own through the generation loop: its tokens up to and with EOS."""
    tokens = backend.generate(np.array([prompt]), np.ones((1, len(prompt)), np.int64), settings).tokens[0].tolist()
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


class Recorder:
    """A job's events, in order."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    @property
    def tokens(self) -> list[int]:
        return [t for e in self.events if isinstance(e, Tokens) for t in e.tokens]

    @property
    def finished(self) -> Finished | None:
        return next((e for e in self.events if isinstance(e, Finished)), None)


def drive(scheduler: ContinuousScheduler, arrivals: list[tuple[int, Job]], limit: int = 500) -> list[int]:
    """Submit each job at its step and turn the scheduler until every job ended; rows running per step."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    running, step = [], 0
    while arrivals or scheduler.waiting() or scheduler.running():
        while arrivals and arrivals[0][0] <= step:
            scheduler.submit([arrivals.pop(0)[1]])
        scheduler.step_once()
        running.append(scheduler.running())
        step += 1
        assert step < limit
    return running


def staggered(tiny: Tiny, backend) -> None:
    loaded, eos = tiny.loaded, tiny.loaded.token_ids.eos
    scheduler = ContinuousScheduler(batch_decoder(backend.steps), loaded.token_ids, loaded.tokenizer, MAX_ROWS, 16,
                                    PREFILL_BUDGET)
    jobs = []
    for k, (step, length, new, sampled) in enumerate(SCHEDULE):
        prompt = prompt_of(tiny, length, seed=k)
        jobs.append((step, Job(prompt, settings_of(new, sampled, seed=100 + k), Recorder())))
    running = drive(scheduler, list(jobs))
    assert max(running) == MAX_ROWS and scheduler.steps < sum(n for _, _, n, _ in SCHEDULE)   # rows decoded together
    for k, (_, job) in enumerate(jobs):
        want = alone(backend, job.prompt, job.settings, eos)
        assert job.emit.tokens == want, f"job {k} ({SCHEDULE[k]})"
        finished = job.emit.finished
        assert finished.reason == ("stop" if want[-1] == eos else "length")
        assert (finished.prompt_tokens, finished.completion_tokens) == (len(job.prompt), len(want))
        assert job.emit.events[-1] is finished and job.ended


@pytest.mark.parametrize("arch", ARCHS)
def test_staggered_jobs_get_their_tokens_alone_onnxrt(workdir, arch):
    tiny = tiny_model(arch, workdir)
    staggered(tiny, compiled(tiny, "onnxrt"))


@pytest.mark.parametrize("arch", TRT_ARCHS)
def test_staggered_jobs_get_their_tokens_alone_trt_standin(standin, workdir, arch):
    tiny = tiny_model(arch, workdir)
    staggered(tiny, compiled(tiny, "trt"))
    assert standin._errors == [] and standin._warnings == []


def test_the_cache_keeps_only_the_slots_its_rows_need(workdir):
    tiny = tiny_model("gpt2", workdir)
    backend = compiled(tiny, "onnxrt")
    loaded = tiny.loaded
    scheduler = ContinuousScheduler(batch_decoder(backend.steps), loaded.token_ids, loaded.tokenizer, 4, 8, 512)
    long_job = Job(prompt_of(tiny, 60, 1), settings_of(3, False, 0), Recorder())
    short_job = Job(prompt_of(tiny, 4, 2), settings_of(30, False, 0), Recorder())
    scheduler.submit([long_job, short_job])
    scheduler.step_once()
    assert scheduler._cache.slots == 61                # the longest row: its prompt and the token fed at the step
    for _ in range(3):
        scheduler.step_once()
    assert long_job.emit.finished is not None and scheduler.running() == 1
    # regrouped when the long row left: the short row alone on its own slots (every token but the newest)
    assert scheduler._cache.slots == len(short_job.prompt) + len(short_job.emit.tokens) - 1 == 4 + 4
    assert scheduler._cache.mask.all()


def test_a_cancelled_job_frees_its_row_at_the_next_step_and_the_queue_is_bounded(workdir):
    tiny = tiny_model("gpt2", workdir)
    backend = compiled(tiny, "onnxrt")
    loaded = tiny.loaded
    scheduler = ContinuousScheduler(batch_decoder(backend.steps), loaded.token_ids, loaded.tokenizer, 2, 4, 512)
    jobs = [Job(prompt_of(tiny, 5, k), settings_of(60, False, 0), Recorder()) for k in range(3)]
    scheduler.submit(jobs)
    with pytest.raises(QueueFull):                     # 3 wait; 2 more would exceed --max-queue 4: none queued
        scheduler.submit([Job([5], settings_of(2, False, 0), Recorder()) for _ in range(2)])
    assert scheduler.waiting() == 3
    scheduler.step_once()
    assert scheduler.running() == 2 and scheduler.waiting() == 1
    jobs[0].cancelled.set()
    scheduler.step_once()
    assert jobs[0].emit.finished.reason == "cancelled" and jobs[0].emit.finished.completion_tokens == 2
    assert scheduler.running() == 2 and scheduler.waiting() == 0 and scheduler._cache.rows == 2
    jobs[1].cancelled.set()
    jobs[2].cancelled.set()
    scheduler.step_once()
    assert scheduler.running() == 0 and scheduler._cache is None


def test_prompt_logprobs_come_from_the_teacher_forced_logits(workdir):
    tiny = tiny_model("gpt2", workdir)
    backend = compiled(tiny, "onnxrt")
    loaded = tiny.loaded
    scheduler = ContinuousScheduler(batch_decoder(backend.steps), loaded.token_ids, loaded.tokenizer, 4, 8, 512)
    prompt = prompt_of(tiny, 17, 3)
    scored = Job(prompt, settings_of(1, False, 0), Recorder(), logprobs=3, echo=True)
    plain = Job(prompt_of(tiny, 6, 4), settings_of(5, False, 0), Recorder())
    drive(scheduler, [(0, plain), (0, scored)])
    prompt_scores = next(e for e in scored.emit.events if isinstance(e, PromptScored)).logprobs
    generated = [lp for e in scored.emit.events if isinstance(e, Tokens) for lp in e.logprobs]
    assert prompt_scores[0] is None and len(prompt_scores) == len(prompt) and len(generated) == 1
    lp = log_softmax(backend.logits(np.array([prompt]), np.ones((1, len(prompt)), np.int64))[0])
    for position, entry in enumerate(prompt_scores[1:]):
        assert entry.token == prompt[position + 1]
        assert abs(entry.logprob - lp[position, entry.token]) < 1e-4
        assert len(entry.top) == 3 and entry.top[0][0] == int(lp[position].argmax())
        assert (entry.logprob == entry.top[0][1]) == (entry.token == entry.top[0][0])
    assert generated[0].token == int(lp[-1].argmax()) and generated[0].logprob == generated[0].top[0][1]
    assert plain.emit.tokens == alone(backend, plain.prompt, plain.settings, loaded.token_ids.eos)


def test_filled_holes_keeps_rows_in_place_and_fills_holes_from_the_end():
    assert filled_holes([True, False, True, True, False, True]) == [0, 5, 2, 3]
    assert filled_holes([False, False, True, True]) == [2, 3]
    assert filled_holes([True, True, False]) == [0, 1]
    assert filled_holes([False, False]) == []


def test_logprobs_of_takes_token_and_top_values_from_the_same_floats():
    logits = np.array([[0.1, 2.0, 2.0 - 1e-7, -1.0], [3.0, 0.0, 1.0, 1.0]], np.float32)
    first, second = logprobs_of(logits, [1, 2], 2)
    assert first.logprob == first.top[0][1] and first.top[0][0] == 1
    assert second.logprob != second.top[0][1] and second.top[0][0] == 0


@pytest.mark.parametrize("arch,backend_name", [("t5", "onnxrt"), ("gpt2", "frameworks")])
def test_per_arrival_batching_gives_each_job_its_answer_alone(workdir, arch, backend_name):
    """Models continuous batching does not cover (encoder-decoders, HF generate) batch per arrival."""
    if arch == "t5":
        from conftest import make_cfg

        cfg = dataclasses.replace(make_cfg(workdir, "--use-cache", backends=(backend_name,)), family="T5",
                                  variant="t5-tiny")
        loaded = get_family("T5").load(cfg)
        backend = importlib.import_module(f"T5.{backend_name}").make_backend(loaded, cfg, workdir)
        prompts = [loaded.tokenizer(t)["input_ids"] for t in ("translate English to German: The house is wonderful.",
                                                               "translate English to German: The cat sleeps.",
                                                               "summarize: The weather was fine all week.")]
    else:
        tiny = tiny_model("gpt2", workdir)
        loaded, backend = tiny.loaded, tiny.backend("frameworks")
        prompts = [prompt_of(tiny, n, n) for n in (4, 9, 4)]
    scheduler = ArrivalScheduler(loaded, backend, 4, 8)
    jobs = [Job(p, settings_of(n, False, 0), Recorder()) for p, n in zip(prompts, (6, 12, 9))]
    scheduler.start()
    try:
        scheduler.submit(jobs)
    finally:
        scheduler.stop()
    eos = loaded.token_ids.eos
    for job in jobs:
        assert job.emit.tokens == alone(backend, job.prompt, job.settings, eos)
        assert job.emit.finished is not None and job.ended


def test_the_server_batches_trt_continuously_and_checks_its_profile(standin, workdir):
    """serve --api openai on trt: the action picks continuous batching, and a request that would leave the
    engine's profile is refused before it is queued (a 400), naming the flag."""
    from NNDF.actions.serving import scheduler_for
    from NNDF.cli import parse_args
    from NNDF.serving.openai_protocol import ApiError, ServedModel, parse

    tiny = tiny_model("gpt2", workdir)
    cfg = parse_args(["serve", "GPT2", "trt", "--use-cache", "--max-batch-size", "3", "--input-profile-max-len", "16",
                      "--working-dir", str(workdir.root)])
    assert cfg.trt.dynamic_batch and cfg.trt.max_dynamic_batch == 3
    backend = importlib.import_module("GPT2.trt").make_backend(tiny.loaded, cfg, workdir)
    scheduler, decoder = scheduler_for(tiny.family, tiny.loaded, backend, cfg)
    assert isinstance(scheduler, ContinuousScheduler) and scheduler.max_rows == 3
    model = ServedModel("m", tiny.loaded.tokenizer, tiny.loaded.max_positions, tiny.loaded.config.vocab_size, True,
                        None, lambda prompt, new: decoder.check_fits(1, prompt, new))
    assert parse({"model": "m", "prompt": [5] * 16, "max_tokens": 4}, model, False).prompts == [[5] * 16]
    with pytest.raises(ApiError, match="--input-profile-max-len") as e:
        parse({"model": "m", "prompt": [5] * 17, "max_tokens": 4}, model, False)
    assert e.value.status == 400
    job = Job([5] * 16, settings_of(6, False, 0), Recorder())
    drive(scheduler, [(0, job)])
    assert job.emit.tokens == alone(backend, job.prompt, job.settings, tiny.loaded.token_ids.eos)
