"""Inside a Triton model instance: a repository written by export-triton, opened again from its
files alone (no torch weights): the graphs' sessions, the tokenizer and the generation settings
it was exported with (`serving.json`, beside the generate model's model.py)."""

from __future__ import annotations

import json
from pathlib import Path

from NNDF.base.config import GenerationSettings, TrtSettings
from NNDF.base.errors import UsageError
from NNDF.models.family import LoadedModel
from NNDF.serving.triton_repo import MANIFEST


class _ConfigOnly:
    """What LoadedModel reads of a torch model (its config): an exported repository has no torch weights."""

    def __init__(self, config):
        self.config = config


def open_exported(model_dir: Path, device_id: int = 0):
    """In a generate model instance: (loaded model, backend, default settings) from the repository's files
    (model_dir: <repository>/generate/1)."""
    from transformers import AutoConfig, AutoTokenizer

    from NNDF.graphs.spec import GraphSpec
    from NNDF.kinds.decoder_only.backends import CompiledDecoderOnly
    from NNDF.kinds.encoder_decoder.backends import CompiledSeq2Seq

    m = json.loads((model_dir / MANIFEST).read_text())
    axes = lambda d: {name: {int(a): n for a, n in ax.items()} for name, ax in d.items()}
    specs = {name: GraphSpec(name=g["spec"]["name"], inputs=axes(g["spec"]["inputs"]), outputs=axes(g["spec"]["outputs"]),
                             make_module=None, make_inputs=None, trace_sizes={}) for name, g in m["graphs"].items()}
    loaded = LoadedModel(m["variant"], _ConfigOnly(AutoConfig.from_pretrained(str(model_dir))),
                         AutoTokenizer.from_pretrained(str(model_dir / "tokenizer")), {}, m["max_positions"],
                         m["generation_defaults"], m["arch"])
    repository = model_dir.parent.parent
    sessions = {name: _open_graph(repository / name / "1", graph, specs[name], m["backend"], device_id)
                for name, graph in m["graphs"].items()}
    if m["encoder_decoder"]:
        backend = CompiledSeq2Seq(m["backend"], sessions, specs, loaded.token_ids, m["start_id"], m["precision"])
    else:
        (name, session), = sessions.items()
        backend = CompiledDecoderOnly(m["backend"], session, specs[name], loaded.token_ids, m["precision"])
    return loaded, backend, GenerationSettings(**m["generation"])


def _open_graph(graph_dir: Path, graph: dict, spec, backend: str, device_id: int):
    """The session for one exported graph: its ONNX file on ONNX Runtime, or this GPU kind's plan."""
    if backend == "onnxrt":
        from NNDF.runtime.ort_session import OrtSession

        return OrtSession(graph_dir / graph["onnx"])
    import torch

    from NNDF.runtime import trt_env
    from NNDF.runtime.trt_session import TrtSession

    cc = trt_env.device_identity()["compute_capability"]
    plan = graph["plans"].get(cc)
    if plan is None:
        raise UsageError(f"the repository has TensorRT plans for compute capability "
                         f"{', '.join(graph['plans'])}, not this GPU's {cc}",
                         "run export-triton on a GPU of this kind into the same folder")
    ranges = {k: tuple(v) for k, v in graph["ranges"].items()}
    device = torch.device("cuda", device_id) if device_id else None   # None: the session's default, GPU 0
    return TrtSession(graph_dir / plan, spec, ranges, TrtSettings(), device=device)
