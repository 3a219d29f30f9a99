"""Triton model repositories: config.pbtxt text, the Python-backend models, and how a
model instance opens what it serves.

`run.py serve` writes a repository of two Python-backend models (`generate`, dynamic
batching; `generate_stream`, decoupled) whose `source` is the serve run's RunConfig as JSON; `run.py export-triton` writes one for NVIDIA's Triton container whose
`source` is files inside the repository (NNDF/serving/export_triton.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from NNDF.serving.requests import OPTIONAL_INPUTS

GENERATE = "generate"
MANIFEST = "serving.json"         # beside an exported generate model: what its generation loop needs
GENERATE_STREAM = "generate_stream"
MODEL_FILE = Path(__file__).with_name("triton_model.py")


def _quoted(text: str) -> str:
    return json.dumps(text)   # protobuf text format accepts JSON string escapes


def text_io() -> tuple[str, str]:
    """(input block, output block) of the generate models: KServe v2 names and types."""
    inputs = ['  { name: "text" data_type: TYPE_STRING dims: [ 1 ] }']
    for spec in OPTIONAL_INPUTS:
        inputs.append(f'  {{ name: "{spec.name}" data_type: TYPE_{spec.triton_type} dims: [ 1 ] optional: true }}')
    output = '  { name: "text" data_type: TYPE_STRING dims: [ 1 ] }'
    return "input [\n" + ",\n".join(inputs) + "\n]", f"output [\n{output}\n]"


def python_model_config(name: str, source: dict, max_batch_size: int, instances: int, kind: str,
                        queue_delay_ms: float | None, decoupled: bool = False) -> str:
    """config.pbtxt of a Python-backend generate model. queue_delay_ms None: no dynamic batching."""
    inputs, outputs = text_io()
    lines = [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {max_batch_size}", inputs, outputs]
    if queue_delay_ms is not None:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {int(queue_delay_ms * 1000)} }}")
    if decoupled:
        lines.append("model_transaction_policy { decoupled: true }")
    lines.append(f"instance_group [ {{ kind: {kind} count: {instances} }} ]")
    lines.append(f'parameters {{ key: "source" value: {{ string_value: {_quoted(json.dumps(source))} }} }}')
    return "\n".join(lines) + "\n"


def write_model(repo: Path, name: str, config_text: str, model_file: Path | None = MODEL_FILE) -> Path:
    """repo/name/config.pbtxt and, for Python-backend models, repo/name/1/model.py."""
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config_text)
    if model_file is not None:
        shutil.copyfile(model_file, folder / "1" / "model.py")
    return folder
