"""OPT, BLOOM, GPT-Neo, GPT-J, GPT-NeoX, Llama, Qwen2 and Mistral: exported graphs and ONNX Runtime tokens must match
PyTorch on each tiny model, each family's `run` must work end to end, and every shipped config
must build its model (on the meta device: no real 13B allocation)."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoConfig, DynamicCache

import run as run_py
from NNDF.base.config import GenerationSettings
from NNDF.cli import parse_args
from NNDF.export.onnx_export import MODEL_FILE, exported, run_torch, verify_graph
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import get_family
from NNDF.runtime.ort_session import OrtSession

TINY = {  # arch -> (family, tiny variant)
    "opt": ("OPT", "opt-tiny"),
    "bloom": ("BLOOM", "bloom-tiny"),
    "gpt_neo": ("GPT2", "gpt-neo-tiny"),
    "gptj": ("GPT2", "gptj-tiny"),
    "gpt_neox": ("GPT2", "gpt-neox-tiny"),
    "llama": ("LLAMA", "llama-tiny"),
    "qwen2": ("LLAMA", "qwen2-tiny"),
    "mistral": ("LLAMA", "mistral-tiny"),
}
# (batch, new tokens, past, positions given logits); make_inputs left-pads row 0 whenever batch > 1
CACHE_SIZES = [(1, 1, 0, 1), (1, 1, 1, 1), (3, 1, 37, 1), (3, 5, 1, 5), (3, 5, 1, 2), (1, 9, 37, 1), (3, 4, 0, 4)]
NOCACHE_SIZES = [(1, 1, 1), (3, 13, 13), (3, 40, 1)]
TEXTS = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben"]


class Tiny:
    """One tiny model with its family, and its backends opened once."""

    def __init__(self, arch: str, workdir):
        self.arch, (family_name, self.variant) = arch, TINY[arch]
        self.family, self.workdir = get_family(family_name), workdir
        self.loaded = self.family.load(self.cfg())
        self._backends = {}

    def cfg(self, *flags, backends=("frameworks",)):
        return parse_args(["run", self.family.name, *backends, "--variant", self.variant,
                           "--working-dir", str(self.workdir.root), *flags])

    def graph(self, use_cache: bool):
        spec = importlib.import_module(f"{self.family.package}.export").decoder_graph(self.loaded, use_cache)
        art = exported(self.workdir, artifact_subdir(self.family, self.loaded), self.loaded.model, spec,
                       self.loaded.source_key, fp16=False)
        return spec, art.file(MODEL_FILE)

    def backend(self, name: str, use_cache: bool = True):
        key = (name, use_cache if name != "frameworks" else None)
        if key not in self._backends:
            flags = ("--use-cache",) if use_cache else ()
            module = importlib.import_module(f"{self.family.package}.{name}")
            self._backends[key] = module.make_backend(self.loaded, self.cfg(*flags, backends=(name,)), self.workdir)
        return self._backends[key]

    def prompts(self, rows):
        enc = self.loaded.tokenizer([TEXTS[r] for r in rows], return_tensors="np", padding=True, padding_side="left")
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


_LOADED: dict[str, Tiny] = {}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second torch thread, and on 2 shared cores its spinning
    fights ONNX Runtime's pool: ORT decode steps ran about 25% slower while torch held two threads,
    which is why the compiled backends hold torch to one thread while they run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def get_tiny(arch: str, workdir) -> Tiny:
    if arch not in _LOADED:
        _LOADED[arch] = Tiny(arch, workdir)
    return _LOADED[arch]


@pytest.fixture(params=list(TINY))
def tiny(request, workdir) -> Tiny:
    return get_tiny(request.param, workdir)


def test_tiny_models_have_the_quirks_they_stand_for(workdir):
    opt = get_tiny("opt", workdir).loaded.model
    assert not opt.config.do_layer_norm_before and opt.model.decoder.project_in is not None  # as opt-350m
    bloom = get_tiny("bloom", workdir).loaded.model
    assert "position_ids" not in inspect.signature(bloom.forward).parameters  # ALiBi
    gptj = get_tiny("gptj", workdir).loaded.config
    assert gptj.rotary_dim < gptj.n_embd // gptj.n_head  # rotary on part of each head
    neox = get_tiny("gpt_neox", workdir).loaded.config
    assert neox.rope_parameters["partial_rotary_factor"] < 1
    neo = get_tiny("gpt_neo", workdir).loaded.config
    assert "local" in neo.attention_layers and neo.window_size < max(p for _, _, p, _ in CACHE_SIZES)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_exported_graph_matches_torch_away_from_trace_shapes(tiny, use_cache):
    spec, path = tiny.graph(use_cache)
    assert tiny.loaded.arch == tiny.family.arch_of(tiny.loaded.config)
    assert ("position_ids" in spec.inputs) == (tiny.arch != "bloom")  # BLOOM: ALiBi from the mask, no positions
    cases = ([{"batch": b, "seq": s, "past_len": p, "kept": k} for b, s, p, k in CACHE_SIZES] if use_cache
             else [{"batch": b, "seq": s, "kept": k} for b, s, k in NOCACHE_SIZES])
    for sizes in cases:
        assert verify_graph(tiny.loaded.model, spec, path, sizes, tolerance=1e-4) <= 1e-4


def test_teacher_forced_logits_match(tiny):
    ids, mask = tiny.prompts([0, 1, 2])
    want = tiny.backend("frameworks").logits(ids, mask)
    for use_cache in (True, False):
        got = tiny.backend("onnxrt", use_cache).logits(ids, mask)
        assert np.abs(want[mask == 1] - got[mask == 1]).max() <= 1e-4  # padded positions are never read


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("rows", [[1], [0, 1, 2]], ids=["batch1", "batch3-padded"])
def test_tokens_identical_to_hf_generate(tiny, use_cache, num_beams, rows):
    ids, mask = tiny.prompts(rows)
    assert (mask == 0).any() == (len(rows) > 1)  # the batch of 3 is left-padded
    settings = GenerationSettings(max_new_tokens=20, num_beams=num_beams, use_cache=use_cache)
    want = tiny.backend("frameworks").generate(ids, mask, settings).tokens
    got = tiny.backend("onnxrt", use_cache).generate(ids, mask, settings).tokens
    assert want.shape == (len(rows), 20)
    np.testing.assert_array_equal(got, want)


def test_gpt_neo_local_window_is_in_the_graph(workdir):
    """transformers 5.23 keeps GPT-Neo's whole history in the cache (no sliding-window layers) and
    applies the window as a mask. Past the window the graph must match PyTorch (checked above at
    past 37 with an 8-token window) and the window must matter there: without it, other logits."""
    tiny = get_tiny("gpt_neo", workdir)
    config = tiny.loaded.config
    assert not any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=config).layers)
    spec, path = tiny.graph(use_cache=True)
    feed = spec.make_inputs({"batch": 3, "seq": 2, "past_len": 37})
    got = OrtSession(path).infer({k: v.numpy() for k, v in feed.items()})
    assert got["present.1.key"].shape[2] == 39  # full history, not the window
    windowless = copy.deepcopy(config)
    windowless.attention_layers = ["global"] * len(config.attention_layers)
    model = type(tiny.loaded.model)(windowless).eval()
    model.load_state_dict(tiny.loaded.model.state_dict())
    assert np.abs(run_torch(spec.make_module(model).eval(), spec, feed)["logits"] - got["logits"]).max() > 1e-2
    assert verify_graph(tiny.loaded.model, spec, path, {"batch": 3, "seq": 2, "past_len": 37}, tolerance=1e-4) <= 1e-4


@pytest.mark.parametrize("arch", list(TINY))
def test_run_action_end_to_end(capsys, workdir, tmp_path, arch):
    family, variant = TINY[arch]
    out_file = tmp_path / "run.json"
    code = run_py.main(["run", family, "frameworks", "onnxrt", "--variant", variant, "--working-dir", str(workdir.root),
                        "--use-cache", "--iterations", "1", "--batch-size", "2", "--use-mask",
                        "--save-output-fpath", str(out_file)])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out_file.read_text())["results"]
    fw, ort = results["frameworks"]["examples"], results["onnxrt"]["examples"]
    assert len(fw) >= 4 and set(fw) == set(ort)
    for name, ex in fw.items():
        assert ex["output"].startswith(ex["input"]) and ex["output"] == ort[name]["output"]


# --------------------------------------------------------------------------- shipped configs
def _shipped():
    for name in ("GPT2", "OPT", "BLOOM"):
        family = get_family(name)
        yield from ((family, v) for v in family.variants if v.config_file)


def _nominal_params(name: str) -> float | None:
    """The size in a variant's name: opt-1.3b -> 1.3e9, bloom-7b1 -> 7.1e9, Cerebras-GPT-111M -> 1.11e8."""
    m = re.search(r"-(\d+(?:\.\d+)?)([mb])(\d?)$", name, re.IGNORECASE)
    if m is None:
        return None
    value = float(m.group(1) + ("." + m.group(3) if m.group(3) else ""))
    return value * (1e6 if m.group(2).lower() == "m" else 1e9)


@pytest.mark.parametrize("family,variant", list(_shipped()), ids=lambda x: getattr(x, "name", ""))
def test_shipped_config_builds_its_model_lazily(family, variant):
    config = AutoConfig.from_pretrained(str(family.config_dir() / variant.config_file))
    assert family.arch_of(config) == variant.arch
    assert family.max_positions(config) >= 1024
    with torch.device("meta"):  # shapes only: a 20B model costs no memory
        model = family.model_class.from_config(config)
    assert type(model).__name__ == config.architectures[0]
    assert all(p.is_meta for p in model.parameters())
    nominal = _nominal_params(variant.name)
    if nominal is not None:  # the config is the published architecture: its size is in its name
        assert 0.85 * nominal <= sum(p.numel() for p in model.parameters()) <= 1.15 * nominal
