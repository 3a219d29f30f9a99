"""The Triton Python-backend model: copied as `<repository>/<model>/1/model.py`.

Triton runs it in its Python-backend stub process, where `triton_python_backend_utils`
exists; it is never imported elsewhere. It only translates: Triton requests in,
NNDF.serving.requests does the work, Triton responses (or one error per bad
request) out. The `source` parameter of config.pbtxt says where the model comes
from: `run.py serve` passes its RunConfig as JSON, an exported repository its
files (NNDF/serving/triton_repo.py).
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # only inside Triton's Python backend


class TritonPythonModel:
    def initialize(self, args):
        from NNDF.serving.requests import OPTIONAL_INPUTS

        config = json.loads(args["model_config"])
        source = json.loads(config["parameters"]["source"]["string_value"])
        model_dir = Path(args["model_repository"]) / args["model_version"]   # <repository>/<model>/<version>
        self.loaded, self.backend, self.defaults = open_source(source, model_dir,
                                                               int(args.get("model_instance_device_id") or 0))
        self.max_batch = max(1, int(config.get("max_batch_size", 1)))
        self.streaming = pb_utils.using_decoupled_model_transaction_policy(config)
        self.input_names = ["text"] + [spec.name for spec in OPTIONAL_INPUTS]

    def _inputs(self, request) -> dict[str, np.ndarray]:
        found = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                found[name] = tensor.as_numpy()
        return found

    def execute(self, requests):
        if self.streaming:
            for request in requests:
                self._stream(request)
            return None
        from NNDF.base.errors import UsageError
        from NNDF.serving.requests import answer_all, parse_request

        responses = [None] * len(requests)
        good, parsed = [], []
        for i, request in enumerate(requests):
            try:
                parsed.append(parse_request(self._inputs(request), self.loaded, self.defaults))
                good.append(i)
            except UsageError as e:
                responses[i] = _error(str(e))
        if parsed:
            try:
                answers = answer_all(parsed, self.loaded, self.backend, self.max_batch)
                for i, text in zip(good, answers):
                    responses[i] = _text_response(text)
            except UsageError as e:   # e.g. a batch that would leave a TensorRT profile
                for i in good:
                    responses[i] = _error(str(e))
            except Exception:  # a bug must fail these requests, not the server
                message = "generation failed: " + traceback.format_exc(limit=3)
                for i in good:
                    responses[i] = _error(message)
        return responses

    def _stream(self, request):
        from NNDF.base.errors import UsageError
        from NNDF.serving.requests import parse_request, stream_answer

        sender = request.get_response_sender()
        try:
            parsed = parse_request(self._inputs(request), self.loaded, self.defaults)
            stream_answer(parsed, self.loaded, self.backend, lambda piece: sender.send(_text_response(piece)))
        except UsageError as e:
            sender.send(_error(str(e)))
        except Exception:
            sender.send(_error("generation failed: " + traceback.format_exc(limit=3)))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def _text_response(text: str):
    return pb_utils.InferenceResponse([pb_utils.Tensor("text", np.array([[text.encode("utf-8")]], dtype=np.object_))])


def _error(message: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def open_source(source: dict, model_dir: Path, device_id: int = 0):
    """In a model instance: (loaded model, backend, default generation settings) from config's `source`.
    device_id: the GPU Triton gave a KIND_GPU instance (TensorRT plans run there)."""
    if source["kind"] == "config":
        import os

        from NNDF.base.config import RunConfig
        from NNDF.export.workdir import WorkingDir
        from NNDF.kinds.makers import make_backends
        from NNDF.registry import load, resolve

        os.chdir(source["cwd"])   # the config's relative paths (working dir, --torch-dir) are from there
        family, cfg = resolve(RunConfig.from_json(source["config"]))
        loaded = load(family, cfg)
        backend, = make_backends(family, loaded, cfg, WorkingDir(cfg.working_dir))
        return loaded, backend, cfg.generation
    if source["kind"] == "exported":
        from NNDF.serving.exported import open_exported

        return open_exported(model_dir, device_id)
    raise ValueError(f"unknown model source {source['kind']!r}")
