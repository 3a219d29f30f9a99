"""`run.py serve`: one model behind NVIDIA Triton Inference Server, run by PyTriton.

PyTriton (`nvidia-pytriton`) bundles the Triton server and its Python backend and
manages the server process. The served models are Triton Python-backend models
(NNDF/serving/triton_model.py) rather than PyTriton-bound callables, because a
Python-backend model answers each request of a batch on its own: a bad request
gets its error and the others in the same batch still get their text.

Models: `generate` (dynamic batching, NNDF/serving/requests.py) and `generate_stream`
(decoupled: one response per new piece of text, for gRPC streaming clients; every
family and backend, through the generation's on_step). Health, readiness and metrics are Triton's own.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

from NNDF.base.config import RunConfig, ServeSettings
from NNDF.base.errors import UsageError
from NNDF.serving.triton_repo import GENERATE, GENERATE_STREAM, python_model_config, write_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """One line naming the flag, before anything starts, if another process listens on a port."""
    for flag, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT leftovers are no obstacle
            try:
                s.bind((host, port))
            except OSError as e:
                raise UsageError(f"{flag} {port} on {host} is in use or not allowed ({e.strerror})",
                                 f"stop what holds it or pass another {flag}") from None


def python_backend_env() -> dict[str, str]:
    """Environment the Python-backend stub needs to run this interpreter and this project.

    The stub links `libpython3.X.so.1.0` by name; the loader finds the system's copy first,
    and a Python built elsewhere (pyenv, conda) then runs its own stdlib on a foreign
    interpreter (seen as "'_thread.RLock' object has no attribute '_recursion_count'").
    Putting this interpreter's library folder first makes the stub load the same build.
    """
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).is_file():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    elif not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise UsageError(f"this Python ({sys.executable}) has no shared libpython, which Triton's Python backend needs",
                         "use a Python built with --enable-shared (system, conda, or pyenv with PYTHON_CONFIGURE_OPTS)")
    return env


def write_serving_repository(repo: Path, cfg: RunConfig) -> None:
    source = {"kind": "config", "config": cfg.to_json(), "cwd": os.getcwd()}
    s = cfg.serve
    write_model(repo, GENERATE, python_model_config(GENERATE, source, s.max_batch_size, s.instances, "KIND_CPU",
                                                    s.max_queue_delay_ms))
    write_model(repo, GENERATE_STREAM, python_model_config(GENERATE_STREAM, source, s.max_batch_size, 1,
                                                           "KIND_CPU", None, decoupled=True))


def start_triton(repo: Path, s: ServeSettings, log_file: Path | None, every_model_required: bool = True):
    """PyTriton's Triton server on a model repository, started and ready; the caller stops it.

    every_model_required False: models whose backend this server lacks stay unloaded while the
    others serve (how an exported repository is tried with PyTriton's server, which bundles
    only the Python backend).
    """
    try:
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    except ImportError:
        raise UsageError("serving needs PyTriton and the Triton client", 'pip install -e ".[serve]"') from None
    os.environ.update(python_backend_env())   # PyTriton starts the server with a copy of this environment
    config = TritonConfig(model_repository=repo, http_address=s.host, http_port=s.http_port,
                          grpc_address=s.host, grpc_port=s.grpc_port, metrics_address=s.host,
                          metrics_port=s.metrics_port, allow_metrics=True, allow_gpu_metrics=False,
                          exit_timeout_secs=s.drain_timeout_s, log_file=log_file,
                          exit_on_error=every_model_required, strict_readiness=every_model_required)
    # statistics stay readable without a token: they show how requests were batched
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[]))
    try:
        triton.run()
    except BaseException:
        triton.stop()
        raise
    return triton


def run(cfg: RunConfig, open_backend) -> dict:
    """Serve until SIGTERM or Ctrl-C; then let in-flight requests finish and stop.
    `open_backend(cfg)` gives (family, loaded, backend): the graphs exported or found."""
    s = cfg.serve
    check_ports_free(s.host, {"--http-port": s.http_port, "--grpc-port": s.grpc_port, "--metrics-port": s.metrics_port})
    python_backend_env()   # fails now, in one line, if this Python cannot host Triton's Python backend
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise UsageError("serving needs PyTriton and the Triton client", 'pip install -e ".[serve]"') from None

    # Export (or find) the graphs and prove the backend opens here, where an error is one
    # line; the model instances then open the same cached files. Free this copy first.
    family, loaded, backend = open_backend(cfg)
    del family, loaded, backend
    gc.collect()

    workdir = Path(cfg.working_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = (workdir / f"triton-serve-{s.http_port}.log").resolve()
    with tempfile.TemporaryDirectory(prefix="triton-repo-", dir=workdir) as repo:
        write_serving_repository(Path(repo), cfg)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        triton = None
        try:
            try:
                triton = start_triton(Path(repo), s, None if cfg.verbose else log_file)
            except UsageError:
                raise
            except Exception as e:  # the server or a model failed to start; its log says why
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                raise UsageError(f"Triton did not start ({first})", f"see {log_file} (or rerun with --verbose)") from None
            print(f"serving {GENERATE} and {GENERATE_STREAM} (gRPC streaming): HTTP {s.host}:{s.http_port}, "
                  f"gRPC {s.host}:{s.grpc_port}, "
                  f"metrics http://{s.host}:{s.metrics_port}/metrics; SIGTERM or Ctrl-C stops after in-flight requests",
                  flush=True)
            while not stop.wait(1.0):
                if not triton.is_alive():
                    raise UsageError("the Triton server stopped unexpectedly", f"see {log_file}")
        finally:
            if triton is not None:
                triton.stop()   # SIGINT to the server: it stops taking requests and drains in-flight ones
    print("stopped", flush=True)
    return {"action": "serve", "streaming": True}
