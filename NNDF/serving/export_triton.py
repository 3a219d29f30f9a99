"""`run.py export-triton`: a Triton model repository for NVIDIA's Triton container on GPU nodes.

    <output>/
      decoder/config.pbtxt            each graph as a Triton model: onnxruntime_onnx, or tensorrt_plan
      decoder/1/model.onnx(.data)     with one plan per GPU kind (`cc_model_filenames`, keyed like
        or <gpu>-sm86-trt11.4.plan    the engine cache: GPU name, compute capability, TensorRT version)
      encoder/, cache_generator/      the same, for encoder-decoders (T5, BART)
      generate/config.pbtxt           Python backend: dynamic batching, one instance per GPU
      generate/1/model.py             NNDF/serving/triton_model.py: this project's generation loop
      generate/1/serving.json         what the generation loop needs: graph IO, token ids, positions
      generate/1/tokenizer/, config.json
      generate_stream/...             the same model, decoupled, for gRPC streaming clients

The generate models run the graph in their own process with this project's session
(ONNX Runtime, or TensorRT for the plan matching the GPU they run on), so the KV cache stays
on the device between steps. The graph's own model makes raw steps servable too; a
deployment that wants only generation loads `generate` and `generate_stream`
(`--model-control-mode=explicit --load-model=generate --load-model=generate_stream`).
Run export-triton once per GPU kind into the same folder to add each kind's plan.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.models.family import LoadedModel, ModelFamily
from NNDF.serving.triton_repo import GENERATE, GENERATE_STREAM, MANIFEST, python_model_config, write_model


def run(cfg: RunConfig, family: ModelFamily, open_backend) -> dict:
    """Write the repository; `open_backend(cfg)` gives (family, loaded, backend): the graphs exported or found."""
    s = cfg.serve
    if s.export_backend == "trt" and not (cfg.trt.dynamic_batch and (cfg.trt.max_dynamic_batch or 0)
                                          >= s.max_batch_size * cfg.generation.num_beams):
        raise UsageError(f"a served TensorRT engine must take batches of 1 to --max-batch-size {s.max_batch_size} rows",
                         f"add --dynamic-batch --max-dynamic-batch {s.max_batch_size * cfg.generation.num_beams}")
    out = Path(s.output)
    earlier = _earlier_export(out)
    _, loaded, backend = open_backend(cfg)
    if earlier and s.export_backend == "trt":
        same = {"family": family.name, "variant": loaded.variant, "backend": "trt", "precision": backend.precision}
        if {k: earlier.get(k) for k in same} != same:
            raise UsageError(f"{out} holds an export of {earlier.get('family')} {earlier.get('variant')} "
                             f"({earlier.get('backend')}, {earlier.get('precision')}), so this GPU's plan cannot join it",
                             "choose another --output")
    # Written beside the target and renamed into place, so a failed export leaves no half repository.
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_repository(staging, out if earlier else None, cfg, family, loaded, backend)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        retired = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(retired)
        staging.rename(out)
        shutil.rmtree(retired)
    else:
        staging.rename(out)
    graphs = ", ".join(backend.steps.graphs())
    print(f"wrote a Triton model repository to {out}: {graphs} ({s.export_backend}), {GENERATE}, {GENERATE_STREAM}")
    return {"action": "export-triton", "output": str(out), "backend": s.export_backend}


def _write_graph(staging: Path, earlier: Path | None, name: str, session, spec, cfg: RunConfig,
                 loaded: LoadedModel) -> dict:
    """One graph as a Triton model folder; what the manifest records of it."""
    s = cfg.serve
    graph_dir = staging / name / "1"
    graph_dir.mkdir(parents=True)
    if earlier is not None and s.export_backend == "trt":   # keep the plans other GPU kinds added
        for plan in (earlier / name / "1").glob("*.plan"):
            shutil.copyfile(plan, graph_dir / plan.name)
    if s.export_backend == "onnxrt":
        from NNDF.export.trt_engines import model_and_data_files

        for f in model_and_data_files(Path(session.path)):
            shutil.copyfile(f, graph_dir / f.name)
        graph = {"onnx": Path(session.path).name}
        config = _graph_config(name, "onnxruntime_onnx", {"model.onnx": Path(session.path).name}, s.instances)
    else:
        plans = _add_plan(graph_dir, Path(session.path))
        graph = {"plans": plans, "ranges": _ranges_for(spec, cfg, loaded)}
        config = _graph_config(name, "tensorrt_plan", plans, s.instances)
    (staging / name / "config.pbtxt").write_text(config)
    return {**graph, "spec": {"name": spec.name, "inputs": spec.inputs, "outputs": spec.outputs}}


def _write_repository(staging: Path, earlier: Path | None, cfg: RunConfig, family: ModelFamily,
                      loaded: LoadedModel, backend) -> None:
    """The whole repository into `staging`; `earlier`: an export of the same model whose plans stay."""
    s = cfg.serve
    graphs = {name: _write_graph(staging, earlier, name, session, spec, cfg, loaded)
              for name, (session, spec) in backend.steps.graphs().items()}
    manifest = {
        "family": family.name, "variant": loaded.variant, "backend": s.export_backend, "graphs": graphs,
        "encoder_decoder": bool(loaded.config.is_encoder_decoder),
        "start_id": loaded.generation_defaults.get("decoder_start_token_id"),
        "arch": loaded.arch, "precision": backend.precision,
        "max_positions": loaded.max_positions, "generation_defaults": loaded.generation_defaults,
        "generation": asdict(cfg.generation),
    }
    source = {"kind": "exported"}
    for name, decoupled in ((GENERATE, False), (GENERATE_STREAM, True)):
        folder = write_model(staging, name, python_model_config(
            name, source, s.max_batch_size, s.instances, "KIND_GPU" if s.export_backend == "trt" else "KIND_CPU",
            None if decoupled else s.max_queue_delay_ms, decoupled=decoupled))
        (folder / "1" / MANIFEST).write_text(json.dumps(manifest, indent=2))
        loaded.tokenizer.save_pretrained(str(folder / "1" / "tokenizer"))
        loaded.config.to_json_file(str(folder / "1" / "config.json"))


def _earlier_export(out: Path) -> dict | None:
    """The manifest of an export already at `out` (it is replaced, or for trt extended);
    a folder holding anything else is refused rather than overwritten."""
    if not out.exists():
        return None
    manifest = out / GENERATE / "1" / MANIFEST
    if manifest.is_file():
        return json.loads(manifest.read_text())
    if out.is_dir() and not any(out.iterdir()):
        return {}
    raise UsageError(f"--output {out} exists and is not a repository written by export-triton",
                     "name a new or empty folder")


def _add_plan(graph_dir: Path, engine: Path) -> dict[str, str]:
    """Copy this GPU's plan beside those exported earlier for other GPUs; compute capability -> file."""
    from NNDF.export.trt_engines import device_dirname
    from NNDF.runtime import trt_env

    device = trt_env.device_identity()
    name = device_dirname(device, trt_env.trt_version()) + ".plan"
    shutil.copyfile(engine, graph_dir / name)
    plans = {}
    for plan in sorted(graph_dir.glob("*.plan")):
        sm = re.search(r"-sm(\d)(\d+)-", plan.name)
        if sm:
            plans[f"{sm.group(1)}.{sm.group(2)}"] = plan.name
    plans[device["compute_capability"]] = name
    return plans


def _ranges_for(spec, cfg: RunConfig, loaded: LoadedModel) -> dict:
    from NNDF.graphs.axes import RunSizes
    from NNDF.runtime.trt_profiles import profile_ranges

    return {k: list(v) for k, v in profile_ranges(spec, cfg.trt, RunSizes.of(cfg), loaded.max_positions).items()}


def _graph_config(name: str, platform: str, files: dict[str, str], instances: int) -> str:
    """config.pbtxt of the graph model. Its inputs and outputs are left to Triton's auto-complete
    (on by default), which reads them from the ONNX file or plan; the batch axis is one of the
    graph's own dynamic dims, so Triton does not batch it (max_batch_size 0)."""
    lines = [f'name: "{name}"', f'platform: "{platform}"', "max_batch_size: 0"]
    if platform == "tensorrt_plan":
        lines += [f'cc_model_filenames {{ key: "{cc}" value: "{f}" }}' for cc, f in files.items()]
        lines.append(f"instance_group [ {{ kind: KIND_GPU count: {instances} }} ]")
    else:
        lines.append(f'default_model_filename: "{files["model.onnx"]}"')
        lines.append(f"instance_group [ {{ count: {instances} }} ]")
    return "\n".join(lines) + "\n"
