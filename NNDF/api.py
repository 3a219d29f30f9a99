"""The Python API in the original demo's shape: one class per family and backend.

    from GPT2.onnxrt import GPT2OnnxRT

    gpt2 = GPT2OnnxRT(variant="gpt2-tiny", use_cache=True, working_dir="models")
    gpt2.generate(input="The lighthouse keeper")                 # -> text
    gpt2.benchmark(input_seq_len=32)["results"]["onnxrt"]        # -> the dict the JSON holds

Keyword arguments are run.py's flags with underscores for dashes (`use_cache=True` is
`--use-cache`, `percentile=[50, 90]` is `--percentile 50 90`; NNDF/base/flags.py lists them), and
they build the RunConfig through the same checks as the command line (build_config), so a bad
value or an unknown keyword raises the same one-line UsageError. Those given to the constructor hold for every call; a call may add or
override any of them for itself (`generate(input=..., do_sample=True, top_p=0.9)`).

The model is loaded, exported and its session opened (engines built) when the object is made.
A call whose flags would change the session (fp16, use_cache, batch size, TensorRT settings...)
opens a new one; lengths and sampling settings never do (TensorRT profiles span the model's
positions unless --input/--output-profile-max-len narrow them). The weights are those of the
constructor's flags: a call's `seed` seeds its sampling and benchmark prompts only.

Family classes are declarations, e.g. in GPT2/trt.py:

    class GPT2TRT(Model, family="GPT2", backend="trt"):
        "GPT2 on TensorRT."
"""

from __future__ import annotations

from dataclasses import replace

from NNDF.actions import RULES, action_for
from NNDF.actions.reporting import save_json
from NNDF.base.build_config import build_config
from NNDF.base.config import GenerationSettings, RunConfig, TimingSettings
from NNDF.base.errors import UsageError
from NNDF.base.flags import typed
from NNDF.export.workdir import WorkingDir
from NNDF.kinds.makers import make_backends
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import load, resolve


def run_config(action: str, family: str, backend: str, flags: dict) -> RunConfig:
    """The RunConfig of `run.py ACTION FAMILY BACKEND --flags...`, built from keyword arguments: each
    value converted and checked as its flag would be, the same one-line UsageError for bad ones."""
    values = {name: typed(name, value) for name, value in flags.items()}
    return build_config({**values, "action": action, "family": family, "backends": (backend,)}, RULES)


def _session_key(cfg: RunConfig) -> RunConfig:
    """cfg without what only one call uses (action, lengths, sampling, timing, files, the weights'
    seed), so two calls with equal keys can share one backend. A flag not listed here counts as
    changing the session, so a new flag is safe by default."""
    g = cfg.generation
    return replace(cfg, action="run", seed=0, input_seq_len=0, default_lengths=(), num_samples=0, tokens_to_generate=0, top_n=0,
                   dataset_path=None, checkpoint=None, image=None, save_output_fpath=None,
                   info=False, verbose=False, cleanup=False, timing=TimingSettings(),
                   generation=GenerationSettings(use_cache=g.use_cache, num_beams=g.num_beams))


class Model:
    """One family on one backend; subclasses declare which (`family=`, `backend=` class keywords)."""

    family_name: str = ""
    backend_name: str = ""

    def __init_subclass__(cls, family: str | None = None, backend: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if family is not None:
            cls.family_name, cls.backend_name = family, backend

    def __init__(self, **flags):
        if not self.family_name:
            raise TypeError("Model is abstract: use a family's class, e.g. GPT2.onnxrt.GPT2OnnxRT")
        self.flags = dict(flags)
        self.family, self.config = resolve(self._parse("run", {}))
        self.workdir = WorkingDir(self.config.working_dir, verify=self.config.verify)
        action = action_for("run", self.family)
        action.check_inputs(self.config, self.family)   # as run.py: refuse before training, export or engine builds
        self.loaded = load(self.family, self.config)
        if self.config.cleanup:
            self.workdir.cleanup(*artifact_subdir(self.family, self.loaded))
        action.check_loaded(self.config, self.family, self.loaded)
        self._backend, self._backend_key = None, None
        self._backend_for(self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(variant={self.loaded.variant!r}, backend={self.backend_name!r})"

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def backend(self):
        """The NNDF Backend (generate / logits on token ids) behind this object."""
        return self._backend

    # ------------------------------------------------------------------ the demo's methods
    def generate(self, input: str | list[str], **flags) -> str | list[str]:
        """The model's text for one prompt (or a list, one batch: different lengths need use_mask=True).
        Decoder-only models return the prompt and its continuation, as the demo did."""
        cfg = self._config("run", flags)
        prompts = [input] if isinstance(input, str) else list(input)
        ids, mask = self.loaded.encode_prompts(prompts, cfg.use_mask, cfg.generation.max_new_tokens)
        tokens = self._backend_for(cfg).generate(ids, mask, cfg.generation).tokens
        texts = [self.loaded.output_text(p, tokens[row]) for row, p in enumerate(prompts)]
        return texts[0] if isinstance(input, str) else texts

    def predict(self, input: str | list[str], context: str | None = None, **flags) -> dict | list[dict]:
        """Encoder families (BERT, VIT): the answer to one input, or to a list (one batch): a text, an
        image path, or a question (with `context=`, or written "QUESTION ||| CONTEXT"). Each answer
        has the "label" run.py shows (class, answer span, entities, top-1 class) and its details."""
        from NNDF.kinds.encoder_only.answers import predict
        from NNDF.kinds.encoder_only.data import parse_line
        from NNDF.kinds.encoder_only.inputs import encode

        if self.loaded.generates:
            raise UsageError(f"predict is for encoder families; {self.family.name} generates", "use generate")
        cfg = self._config("run", flags)
        inputs = [input] if isinstance(input, str) else list(input)
        batch = encode(self.loaded, [parse_line(self.loaded, text, context) for text in inputs])
        answers = predict(self.loaded, batch, self._backend_for(cfg).forward(batch.feed))
        return answers[0] if isinstance(input, str) else answers

    def benchmark(self, **flags) -> dict:
        """`run.py benchmark`: latency and tokens/s; returns what its --save-output-fpath JSON holds."""
        return self._perform("benchmark", flags)

    def accuracy(self, **flags) -> dict:
        """`run.py accuracy`: LAMBADA top-N and perplexity (dataset_path= for a local file)."""
        return self._perform("accuracy", flags)

    def run(self, **flags) -> dict:
        """`run.py run`: the family's checkpoint.toml examples (checkpoint= for your own)."""
        return self._perform("run", flags)

    # ------------------------------------------------------------------ machinery
    def _parse(self, action: str, flags: dict) -> RunConfig:
        return run_config(action, self.family_name, self.backend_name, {**self.flags, **flags})

    def _config(self, action: str, flags: dict) -> RunConfig:
        cfg = self._parse(action, flags)
        if (cfg.variant or self.config.variant) != self.config.variant or cfg.torch_dir != self.config.torch_dir \
                or cfg.random_weights != self.config.random_weights:
            raise UsageError("variant, torch_dir and random_weights are fixed when the object is made",
                             f"make a new {type(self).__name__}(...) for another model")
        return replace(cfg, family=self.family.name, variant=self.config.variant)

    def _backend_for(self, cfg: RunConfig):
        key = _session_key(cfg)
        if self._backend is None or key != self._backend_key:
            # this object's backend only: the command line adds frameworks (the fp32 reference) to
            # accuracy and compare under --quantize, which made this unpacking fail for every family
            self._backend, = make_backends(self.family, self.loaded, replace(cfg, backends=(self.backend_name,)),
                                                       self.workdir)
            self._backend_key = key
        return self._backend

    def _perform(self, name: str, flags: dict) -> dict:
        cfg = self._config(name, flags)
        action = action_for(name, self.family)
        action.check_inputs(cfg, self.family)
        cfg = action.fit(cfg, self.family, self.loaded)
        action.check_loaded(cfg, self.family, self.loaded)
        result = action.answer(cfg, self.family, self.loaded, [self._backend_for(cfg)])
        save_json(cfg.save_output_fpath, result)
        return result
