"""What a model family declares, and how a variant becomes a loaded torch model.

A family (GPT2, T5, ...) lists its variants and says how to build its tiny
offline model; loading from the hub, from `--torch-dir`, or as a real-size
architecture with random weights is the same for every family and lives here.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from NNDF.base.config import RunConfig, TokenIds
from NNDF.base.errors import UsageError
from NNDF.base.hashing import stable_hash
from NNDF.models.hub import hub_reachable

# Models load in fp32 whatever dtype their config names (Llama, Mistral and Qwen2 checkpoints say
# bfloat16, which transformers 5 would otherwise honour): export traces fp32 and --fp16 converts.
HOST_DTYPE = torch.float32

# HF config fields that hold a model's longest sequence (GPT2's n_positions is an alias of the first)
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "seq_length")


class WrongModelType(UsageError):
    """A checkpoint whose architecture (HF model_type) the family's graphs do not fit."""

    def __init__(self, problem: str, model_type: str):
        super().__init__(problem, "this toolkit has no family for that architecture")
        self.model_type = model_type


@dataclass(frozen=True)
class Variant:
    name: str
    hub_id: str | None = None          # None: exists only offline (a tiny variant)
    config_file: str | None = None     # shipped config.json, for --random-weights without the hub
    arch: str = "default"              # which of the family's layouts (graph boundary quirks) applies
    build_tiny: Callable[[int], tuple[torch.nn.Module, Any]] | None = None  # seed -> (model, tokenizer)


@dataclass
class LoadedModel:
    """A torch model in eval mode with everything the backends need to know about it."""

    generates = True          # a generating model (encoders answer in one pass; not a dataclass field)
    reads_images = False      # image-to-text: accuracy scores captions of images, not texts

    variant: str
    model: torch.nn.Module
    tokenizer: Any
    source_key: dict                    # identifies the weights; part of every cache key
    max_positions: int
    generation_defaults: dict = field(default_factory=dict)  # eos/pad/decoder start/early stopping
    arch: str = "default"               # key into the family's layouts

    @property
    def config(self):
        return self.model.config

    @property
    def token_ids(self) -> TokenIds:
        """The special tokens and search defaults the generation loop needs."""
        d = self.generation_defaults
        return TokenIds(eos=d["eos_token_id"], pad=d["pad_token_id"], early_stopping=d["early_stopping"],
                        forced_bos=d["forced_bos_token_id"], forced_eos=d["forced_eos_token_id"],
                        length_penalty=d["length_penalty"])

    @property
    def decoder_start_id(self) -> int:
        start = self.generation_defaults["decoder_start_token_id"]
        if start is None:
            raise ValueError(f"{self.variant} has no decoder_start_token_id in its config")
        return start

    # How the actions' prompts become model inputs and outputs become text. These are the
    # text families' answers; image-to-text models (Vision2Seq) override them.
    @property
    def times_encoder(self) -> bool:
        """Whether the benchmark reports encoder latency (the generation loop's start step)."""
        return bool(self.model.config.is_encoder_decoder)

    def encode_prompts(self, prompts: list[str], use_mask: bool, max_new_tokens: int, special_tokens: bool = True):
        """(input_ids, attention_mask) for one batch; different lengths need --use-mask (left padding).
        special_tokens False: the prompts already hold the ones the model expects (a chat template's)."""
        encoded = [self.tokenizer(p, add_special_tokens=special_tokens)["input_ids"] for p in prompts]
        lengths = {len(e) for e in encoded}
        if len(lengths) > 1 and not use_mask:
            raise UsageError("prompts of different lengths in one batch need an attention mask", "add --use-mask")
        if 0 in lengths:
            raise UsageError("an empty prompt has nothing to continue", "type some text")
        longest = max(lengths)
        if self.model.config.is_encoder_decoder and longest > self.max_positions:
            raise UsageError(f"an input of {longest} tokens exceeds {self.variant}'s {self.max_positions} encoder "
                             "positions", "shorten the input or use a variant with more positions")
        if not self.model.config.is_encoder_decoder and longest + max_new_tokens > self.max_positions:
            raise UsageError(f"prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds the model's "
                             f"{self.max_positions} positions", "shorten the prompt or lower --output-seq-len")
        from NNDF.models.tokenizers import pad_rows

        pad = self.tokenizer.pad_token_id
        return pad_rows(encoded, self.generation_defaults["pad_token_id"] if pad is None else pad, "left")

    def release_weights(self) -> None:
        """Free the torch model's weights once a run no longer needs them (its graphs are made and
        frameworks is not among its backends): they move to the meta device, so its config, module
        tree and parameter shapes stay for whatever still reads them."""
        self.model.to("meta")

    def output_text(self, prompt: str, new_tokens) -> str:
        """What the model says: prompt + continuation for decoder-only models, the answer for encoder-decoders."""
        from NNDF.models.tokenizers import decode_safely

        eos = self.generation_defaults["eos_token_id"]
        tokens = [int(t) for t in new_tokens]
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        text = decode_safely(self.tokenizer, tokens)
        return text if self.model.config.is_encoder_decoder else prompt + text

    def benchmark_lengths(self, input_len: int, new_tokens: int, keep_input: bool, keep_new: bool) -> tuple[int, int]:
        """The longest (prompt, new tokens) up to these that fit the model's positions, changing only
        what is not kept: the prompt before the new tokens (decode steps are what a benchmark times),
        which keep at least half the positions. Unchanged if they fit or nothing may change."""
        limit = self.max_positions
        if self.model.config.is_encoder_decoder:    # the prompt fills the encoder's positions only
            return (input_len if keep_input else min(input_len, limit)), new_tokens
        if input_len + new_tokens <= limit:
            return input_len, new_tokens
        if not keep_new:
            new_tokens = min(new_tokens, max(1, limit - input_len) if keep_input else limit // 2)
        if not keep_input:
            input_len = max(1, min(input_len, limit - new_tokens))
        return input_len, new_tokens

    def random_prompts(self, cfg: RunConfig):
        """Benchmark input: seeded random token ids of --input-seq-len (no special tokens)."""
        config = self.model.config
        needed = cfg.input_seq_len + (0 if config.is_encoder_decoder else cfg.generation.max_new_tokens)
        if needed > self.max_positions:
            raise UsageError(f"--input-seq-len {cfg.input_seq_len} with --output-seq-len {cfg.generation.max_new_tokens} "
                             f"needs {needed} positions, but {self.variant} has {self.max_positions}", "lower one of them")
        rng = np.random.default_rng(cfg.seed)
        vocab = min(config.vocab_size, len(self.tokenizer))
        ids = rng.integers(0, vocab, size=(cfg.batch_size, cfg.input_seq_len), dtype=np.int64)
        ids = np.where(np.isin(ids, list(self.tokenizer.all_special_ids)), (ids + 1) % vocab, ids)  # no EOS/pad
        return ids, np.ones_like(ids)

    def chat_prompt(self, cfg: RunConfig) -> Callable[[str], str | None]:
        """Each chat line as a prompt; None skips the line (an empty line means nothing to text models)."""
        return lambda line: line if line.strip() else None

    def chat_hint(self, cfg: RunConfig) -> str | None:
        """What a chat line should hold, when that is not plain text (printed once as chat starts)."""
        return None


@dataclass
class ModelFamily:
    generates = True          # its models generate (see LoadedModel.generates); not a dataclass field
    reads_images = False      # its models caption images (see LoadedModel.reads_images)
    name: str                            # as typed on the command line, e.g. "GPT2"
    package: str                         # python package holding frameworks.py, onnxrt.py, trt.py
    variants: tuple[Variant, ...]
    model_class: type                    # e.g. transformers.AutoModelForCausalLM
    fallback_tokenizer: Callable[[], Any]                       # offline tokenizer for random weights
    max_positions: Callable[[Any], int]                         # HF config -> longest sequence
    layouts: dict[str, Any] = field(default_factory=dict)      # arch -> graph layout, read by the family's code
    # HF config.model_type values this family's graphs fit: any hub id or --torch-dir of one of
    # these types loads as this family (empty: not checked)
    model_types: tuple[str, ...] = ()

    kind = ""    # which NNDF/kinds/ package makes its graphs and backends (a class attribute, not a field)

    @property
    def tiny_variant(self) -> str:
        """The default: the first offline variant."""
        return next(v.name for v in self.variants if v.build_tiny is not None)

    def layout(self, loaded: "LoadedModel"):
        return self.layouts[loaded.arch]

    def find_variant(self, name: str) -> Variant | None:
        """A listed variant, by its name or hub id (exactly); None for anything else."""
        return next((v for v in self.variants if v.name == name or (v.hub_id is not None and v.hub_id == name)), None)

    def variant(self, name: str) -> Variant:
        found = self.find_variant(name)
        if found is None:
            raise UsageError(f"unknown {self.name} variant '{name}'",
                             f"choose one of: {', '.join(v.name for v in self.variants)}")
        return found

    def check_model_type(self, config, what: str) -> None:
        """One line when a checkpoint's architecture is not one this family's graphs fit (the
        registry, which knows every family, names the one that fits)."""
        if not self.model_types or config.model_type in self.model_types:
            return
        raise WrongModelType(f"{what} is a '{config.model_type}' model, not one of the {self.name} family's types "
                             f"({', '.join(self.model_types)})", config.model_type)

    @property
    def folder(self) -> Path:
        """The family's folder (configs/, checkpoint.toml, shipped data)."""
        return Path(importlib.util.find_spec(self.package).origin).parent   # found, not imported

    def config_dir(self) -> Path:
        return self.folder / "configs"

    def onnxrt_from_weights(self, config, cfg: RunConfig) -> bool:
        """Whether cfg's onnxrt backend would write a model of `config`'s decoder straight from its weights
        (the memory estimate's stages depend on it); decoder-only families say (their layouts decide)."""
        return False

    def load_dtype(self, config, cfg: RunConfig) -> torch.dtype:
        """The dtype a checkpoint of `config` loads in for cfg's run: fp32 (what every export traces and
        frameworks runs on the host), except where the run's one graph is onnxrt's decoder written from the
        weights and quantized: a bf16 or fp16 checkpoint then loads in its own dtype, each weight widened to
        fp32 only while it is quantized, so the run holds half the bytes it would widened (issue 25).
        Random weights are always drawn in fp32, whatever dtype the config names."""
        if cfg.random_weights and cfg.torch_dir is None:
            return HOST_DTYPE
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
        if dtype in (torch.bfloat16, torch.float16) and cfg.quantize is not None and tuple(cfg.backends) == ("onnxrt",) \
                and self.onnxrt_from_weights(config, cfg):
            return dtype
        return HOST_DTYPE

    # ---------------------------------------------------------------- before loading
    def meta_model(self, cfg: RunConfig) -> tuple[torch.nn.Module, int] | None:
        """`cfg`'s model as it will load, and its positions, from its config alone: built on the meta
        device, so no weight is read or allocated (a 7B checkpoint's shapes cost a second, not 28 GB;
        the memory check before loading reads them). None where only loading can tell: tiny variants
        (small, and built or trained on the spot), and a config that cannot be read now (loading then
        says why, in its own words)."""
        config = self._config_before_load(cfg)
        if config is None:
            return None
        if cfg.n_positions is not None and cfg.n_positions > self.max_positions(config):
            for name in POSITION_FIELDS:
                if name in config.to_dict() or hasattr(type(config), "attribute_map") and name in config.attribute_map:
                    setattr(config, name, cfg.n_positions)
        try:
            with torch.device("meta"):
                model = self.model_class.from_config(config, dtype=self.load_dtype(config, cfg))
        except Exception:  # a class that cannot be built bare; the check after loading still runs
            return None
        return model, self.max_positions(config)

    def _config_before_load(self, cfg: RunConfig):
        from transformers import AutoConfig

        variant = self.find_variant(cfg.variant or self.tiny_variant) if cfg.torch_dir is None else None
        if cfg.torch_dir is None and variant is not None and variant.build_tiny is not None:
            return None
        try:
            if cfg.torch_dir is not None:
                config = AutoConfig.from_pretrained(str(cfg.torch_dir))
            elif variant is not None and cfg.random_weights and variant.config_file:
                config = AutoConfig.from_pretrained(str(self.config_dir() / variant.config_file))
            else:
                hub_id = variant.hub_id if variant is not None else cfg.variant
                config = AutoConfig.from_pretrained(hub_id, local_files_only=not hub_reachable())
        except Exception:  # missing, offline, not a config: loading reports it
            return None
        if self.model_types and config.model_type not in self.model_types:
            return None     # loading refuses it with the family that fits
        return config

    # ---------------------------------------------------------------- loading
    def load(self, cfg: RunConfig) -> LoadedModel:
        loaded = self._load(cfg)
        if cfg.n_positions is not None:
            loaded = self.with_positions(loaded, cfg.n_positions, cfg.seed)
        return loaded

    def _load(self, cfg: RunConfig) -> LoadedModel:
        if cfg.torch_dir is not None:
            return self._load_local(cfg.torch_dir, cfg.variant or cfg.torch_dir.name, cfg)
        variant = self.find_variant(cfg.variant or self.tiny_variant)
        if variant is None:   # not listed: any hub model id of an architecture this family fits
            return self._load_any_id(cfg.variant, cfg.random_weights, cfg.seed, cfg)
        if variant.build_tiny is not None:
            torch.manual_seed(cfg.seed)
            model, tokenizer = variant.build_tiny(cfg.seed)
            # some tiny models are trained once per machine, so name their exact weights
            key = {"variant": variant.name, "seed": cfg.seed, "weights": weights_digest(model)}
            return self._finish(variant, model, tokenizer, key)
        if cfg.random_weights:
            return self._load_random(variant, cfg.seed)
        return self._load_hub(variant, cfg)

    def _load_random(self, variant: Variant, seed: int) -> LoadedModel:
        from transformers import AutoConfig

        path = self.config_dir() / (variant.config_file or "")
        if not variant.config_file or not path.is_file():
            raise UsageError(f"no shipped config for {variant.name}, so --random-weights cannot build it offline",
                             "use a variant listed by --info")
        return self._random_from_config(variant, AutoConfig.from_pretrained(str(path)), seed)

    def _random_from_config(self, variant: Variant, config, seed: int) -> LoadedModel:
        torch.manual_seed(seed)
        model = self.model_class.from_config(config, dtype=HOST_DTYPE)
        tokenizer = self._cached_tokenizer(variant.hub_id) or self.fallback_tokenizer()
        key = {"variant": variant.name, "seed": seed, "weights": "random", "config": stable_hash(config.to_dict())}
        return self._finish(variant, model, tokenizer, key)

    def _load_any_id(self, hub_id: str, random_weights: bool, seed: int, cfg: RunConfig) -> LoadedModel:
        """A model id the family does not list (`distilgpt2`, `org/a-gpt2-finetune`): its config,
        from the hub or the local HF cache, decides whether it fits; then it loads like a listed one."""
        from transformers import AutoConfig

        local_only = not hub_reachable()
        try:
            config = AutoConfig.from_pretrained(hub_id, local_files_only=local_only)
        except Exception as e:  # unreachable, not cached, no such repo: all mean "not loadable as an id"
            why = "the hub is unreachable and it is not in the local HF cache" if local_only else _first_line(e)
            raise UsageError(f"unknown {self.name} variant '{hub_id}', and it does not load as a HuggingFace "
                             f"model id ({why})",
                             f"pass --torch-dir DIR (a local copy), or --random-weights with a listed variant "
                             f"(`python run.py list {self.name}`)") from None
        self.check_model_type(config, f"'{hub_id}'")
        variant = Variant(hub_id, hub_id, arch=self.arch_of(config))
        return self._random_from_config(variant, config, seed) if random_weights else self._load_hub(variant, cfg)

    def saved_tokenizer(self, source: str, **kwargs):
        """The tokenizer saved beside a model (a hub id or a folder); families whose models read no
        text (images) have none."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, **kwargs)

    def _load_hub(self, variant: Variant, cfg: RunConfig) -> LoadedModel:
        from transformers import AutoConfig

        local_only = not hub_reachable()
        try:
            config = AutoConfig.from_pretrained(variant.hub_id, local_files_only=local_only)
            model = self.model_class.from_pretrained(variant.hub_id, dtype=self.load_dtype(config, cfg),
                                                     local_files_only=local_only)
            tokenizer = self.saved_tokenizer(variant.hub_id, local_files_only=local_only)
        except UsageError:   # the model class's own refusal (a head the family does not serve) says it best
            raise
        except Exception as e:  # offline, unknown repo, gated model...: the user's fix is the same
            why = "the hub is unreachable and it is not in the local HF cache" if local_only else _first_line(e)
            raise UsageError(f"could not load '{variant.hub_id}' from the HuggingFace hub ({why})",
                             f"check the network, pass --torch-dir DIR, or use --random-weights / --variant {self.tiny_variant}"
                             ) from None
        self.check_model_type(model.config, f"'{variant.hub_id}'")
        key = {"hub_id": variant.hub_id, "revision": getattr(model.config, "_commit_hash", None)}
        return self._finish(variant, model, tokenizer, key)

    def _load_local(self, path: Path, name: str, cfg: RunConfig) -> LoadedModel:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(path))
            self.check_model_type(config, f"--torch-dir {path}")
            model = self.model_class.from_pretrained(str(path), dtype=self.load_dtype(config, cfg))
        except UsageError:
            raise
        except Exception as e:  # user files fail in many library-specific ways; all mean "not loadable"
            raise UsageError(f"could not load a {self.name} model from --torch-dir {path}: {_first_line(e)}",
                             "the folder needs config.json and model weights saved by save_pretrained") from None
        try:
            tokenizer = self.saved_tokenizer(str(path))
        except (OSError, ValueError, TypeError):
            raise UsageError(f"--torch-dir {path} has no usable tokenizer files",
                             "save the tokenizer there too (tokenizer.save_pretrained)") from None
        stamps = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in path.iterdir() if f.is_file())
        key = {"torch_dir": str(path.resolve()), "files": stable_hash(stamps)}
        return self._finish(Variant(name, arch=self.arch_of(model.config)), model, tokenizer, key)

    def with_positions(self, loaded: LoadedModel, n: int, seed: int) -> LoadedModel:
        """`loaded` with room for n positions (the demo's --n-positions, for long benchmark inputs).

        The model is rebuilt from its config with the longer length; every weight is copied over,
        and a position table keeps its trained rows, so the first max_positions positions compute
        what they did. The added rows are seeded random (the demo re-initialised the whole table).
        """
        if n <= loaded.max_positions:
            print(f"note: --n-positions {n} is not more than {loaded.variant}'s {loaded.max_positions} positions; "
                  "keeping the model as it is", file=sys.stderr)
            return loaded
        config = copy.deepcopy(loaded.model.config)
        for name in POSITION_FIELDS:
            if name in config.to_dict() or hasattr(type(config), "attribute_map") and name in config.attribute_map:
                setattr(config, name, n)
        if self.max_positions(config) != n:
            raise UsageError(f"--n-positions cannot lengthen {self.name} models", "drop --n-positions")
        torch.manual_seed(seed)
        model = self.model_class.from_config(config, dtype=HOST_DTYPE)
        old = loaded.model.state_dict()
        with torch.no_grad():
            for key, new in model.state_dict().items():
                if key in old:
                    overlap = tuple(slice(0, min(a, b)) for a, b in zip(new.shape, old[key].shape))
                    new[overlap] = old[key][overlap]
        key = {**loaded.source_key, "n_positions": n, "seed_for_new_positions": seed}
        return self._finish(Variant(loaded.variant, arch=loaded.arch), model, loaded.tokenizer, key)

    def arch_of(self, config) -> str:
        """A local checkpoint's layout, from its model_type (families with one layout use "default")."""
        return config.model_type if config.model_type in self.layouts else "default"

    @staticmethod
    def _cached_tokenizer(hub_id: str | None):
        """The real tokenizer if the user's HF cache already has it; never touches the network."""
        if hub_id is None:
            return None
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(hub_id, local_files_only=True)
        except Exception:  # absent from the cache in any of several ways
            return None

    def _finish(self, variant: Variant, model, tokenizer, key: dict) -> LoadedModel:
        model.eval()
        config = model.config
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        if eos is None:
            eos = tokenizer.eos_token_id
        pad = getattr(gen, "pad_token_id", None) if gen is not None else None
        if pad is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        defaults = {
            "eos_token_id": eos,
            "pad_token_id": pad,
            "decoder_start_token_id": getattr(config, "decoder_start_token_id", None),
            # transformers 5 leaves unset fields None; these are the values generate then uses
            "early_stopping": _or(getattr(gen, "early_stopping", None), False),
            "length_penalty": _or(getattr(gen, "length_penalty", None), 1.0),
            "forced_bos_token_id": getattr(gen, "forced_bos_token_id", None) if gen is not None else None,
            "forced_eos_token_id": getattr(gen, "forced_eos_token_id", None) if gen is not None else None,
        }
        return LoadedModel(variant.name, model, tokenizer, key, self.max_positions(config), defaults, variant.arch)

    def describe(self) -> str:
        lines = [f"{self.name} variants:"]
        for v in self.variants:
            where = v.hub_id if v.hub_id else "offline tiny model (seeded; encoder-decoders briefly trained)"
            lines.append(f"  {v.name:<28} {where}")
        return "\n".join(lines)


def hub_variants(hub_ids, arch: str = "default") -> tuple[Variant, ...]:
    """A Variant per hub id, named by the id's last part, with its shipped config `<name>.json`;
    `hub_ids` is a list, or a map from each id to its arch."""
    archs = hub_ids if isinstance(hub_ids, dict) else dict.fromkeys(hub_ids, arch)
    return tuple(Variant(h.split("/")[-1], h, f"{h.split('/')[-1]}.json", arch=a) for h, a in archs.items())


def tiny_decoder(config_class, model_class, **fields) -> tuple[torch.nn.Module, Any]:
    """A decoder-only model built from `fields` with the 512-token tokenizer trained on shipped
    text, its special tokens set in the config: what a tiny variant's build_tiny returns."""
    from NNDF.models.tokenizers import gpt2_style_tokenizer

    tokenizer = gpt2_style_tokenizer(512)
    config = config_class(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **fields)
    return model_class(config), tokenizer


def weights_digest(model: torch.nn.Module) -> str:
    """Content hash of a (small) model's weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _first_line(error: Exception, limit: int = 160) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def _or(value, default):
    return default if value is None else value
