"""`python run.py env`: what this machine has for each backend, and what is missing.

Most GPU set-up problems are a mismatched pair (a CPU-only torch, onnxruntime and
onnxruntime-gpu installed together, a TensorRT wheel without its native libraries, TensorRT
built for another CUDA major than torch). This prints each piece once, so a user can see
which one without reading a traceback.
"""

from __future__ import annotations

import importlib.metadata as metadata

from NNDF.actions.action import Action
from NNDF.base.config import RunConfig


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]


def torch_facts() -> dict:
    import torch

    facts = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpu": None}
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        facts["gpu"] = f"{torch.cuda.get_device_name(index)} (sm{major}{minor}, cuda:{index})"
    return facts


def onnxruntime_facts() -> dict:
    dists = {d: _version(d) for d in ("onnxruntime", "onnxruntime-gpu")}
    facts = {"distributions": {d: v for d, v in dists.items() if v}, "providers": [], "error": None}
    try:
        import onnxruntime

        facts["version"] = onnxruntime.__version__
        facts["providers"] = onnxruntime.get_available_providers()
    except Exception as e:   # a broken install raises anything from ImportError to OSError
        facts["error"] = _first_line(e)
    return facts


def tensorrt_facts() -> dict:
    facts = {"distributions": {d: v for d in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-bindings",
                                              "tensorrt-cu13-bindings") if (v := _version(d))},
             "version": None, "error": None}
    try:
        import tensorrt

        facts["version"] = str(tensorrt.__version__)
    except (ImportError, OSError) as e:   # OSError: the bindings are there but libnvinfer is not
        facts["error"] = _first_line(e)
    return facts


def backend_status(t: dict, o: dict, r: dict) -> dict[str, str]:
    """One line per backend: ready (and where), or what is missing and the fix."""
    status = {"frameworks": f"ready on {t['gpu']}" if t["gpu"] else
              ("ready on the CPU (this torch has no CUDA: install a CUDA build of torch for the GPU)"
               if not t["torch_cuda"] else "ready on the CPU (torch has CUDA but sees no GPU)")}
    if o["error"]:
        status["onnxrt"] = f"missing: onnxruntime cannot be imported ({o['error']}); pip install -e '.[cpu]' or '.[gpu-cu12]'"
    elif len(o["distributions"]) > 1:
        status["onnxrt"] = ("broken set: onnxruntime and onnxruntime-gpu are both installed and overwrite each other's "
                            "files; pip uninstall -y onnxruntime onnxruntime-gpu, then install one extra")
    elif "CUDAExecutionProvider" in o["providers"]:
        status["onnxrt"] = "ready on CUDA (CUDAExecutionProvider)" + ("" if t["gpu"] else ", but torch sees no GPU")
    else:
        status["onnxrt"] = "ready on the CPU only (for CUDA: pip install -e '.[gpu-cu12]')"
    missing = []
    if r["error"]:
        missing.append(f"tensorrt cannot be imported ({r['error']})")
    if not t["gpu"]:
        missing.append("no CUDA GPU visible to torch")
    if r["version"] and int(r["version"].split(".")[0]) < 10:
        missing.append(f"TensorRT {r['version']} is older than 10")
    status["trt"] = f"ready (TensorRT {r['version']})" if not missing else \
        "missing: " + "; ".join(missing) + " (install '.[gpu-cu12]' or '.[gpu-cu13]' to match torch's CUDA)"
    return status


def report() -> str:
    import onnx
    import transformers

    t, o, r = torch_facts(), onnxruntime_facts(), tensorrt_facts()
    lines = [
        f"torch          {t['torch']} (CUDA {t['torch_cuda'] or 'none: CPU build'})",
        f"GPU            {t['gpu'] or 'none visible'}",
        f"onnxruntime    {o.get('version') or 'not importable'} from {o['distributions'] or 'no distribution'}; "
        f"providers {', '.join(o['providers']) or 'none'}",
        f"tensorrt       {r['version'] or 'not importable'}"
        + (f" (installed: {r['distributions']})" if r["distributions"] else ""),
        f"transformers   {transformers.__version__}",
        f"onnx           {onnx.__version__}",
        "",
        "backends:",
    ]
    lines += [f"  {name:<11} {line}" for name, line in backend_status(t, o, r).items()]
    return "\n".join(lines)


class Environment(Action):
    """`env`: no family, no model: what this machine has for each backend."""

    def perform(self, cfg: RunConfig, family) -> dict:
        print(report())
        return {"action": "env"}
