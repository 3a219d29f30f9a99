"""Clients of the served `generate` models (tritonclient), and `run.py serve` as a child
process for the tests and benchmarks/serve_speed.py.

A child server is always stopped by whoever started it: SIGTERM, then SIGKILL of
its process group if it does not exit in time.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class ServerProcess:
    """A server child process with its own process group, its output in a file."""

    def __init__(self, argv: list[str], log: Path, http_port: int, grpc_port: int, env: dict | None = None):
        self.log, self.http_port, self.grpc_port = log, http_port, grpc_port
        self._out = open(log, "w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def wait_ready(self, model: str = "generate", timeout: float = 180) -> None:
        import tritonclient.http as http

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                client = http.InferenceServerClient(self.http_url)
                try:
                    if client.is_model_ready(model):
                        return
                finally:
                    client.close()
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


def serve_argv(workdir: str, http_port: int, grpc_port: int, metrics_port: int, *flags: str,
               model: tuple[str, ...] = ("GPT2", "onnxrt", "--use-cache")) -> list[str]:
    return [sys.executable, "run.py", "serve", *model, "--api", "triton", "--working-dir", workdir,
            "--host", HOST, "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics_port), *flags]


def text_inputs(module, prompt: str, max_new_tokens: int | None = None, num_beams: int | None = None, **settings):
    """KServe v2 inputs for `generate`, built with tritonclient.http or tritonclient.grpc (`module`);
    `settings` are the other optional inputs by name (do_sample, temperature, top_k, top_p,
    repetition_penalty, seed), each sent with the type the served model declares."""
    from NNDF.serving.requests import OPTIONAL_INPUTS

    text = module.InferInput("text", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    inputs = [text]
    values = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, **settings}
    unknown = set(values) - {spec.name for spec in OPTIONAL_INPUTS}
    if unknown:
        raise ValueError(f"the generate model has no input {', '.join(sorted(unknown))}")
    for spec in OPTIONAL_INPUTS:
        if values.get(spec.name) is not None:
            x = module.InferInput(spec.name, [1, 1], spec.triton_type)
            x.set_data_from_numpy(np.array([[values[spec.name]]], dtype=spec.dtype))
            inputs.append(x)
    return inputs


def generate_http(url: str, prompt: str, max_new_tokens: int | None = None, num_beams: int | None = None,
                  model: str = "generate", **settings) -> str:
    import tritonclient.http as http

    client = http.InferenceServerClient(url, network_timeout=120)
    try:
        result = client.infer(model, text_inputs(http, prompt, max_new_tokens, num_beams, **settings))
        return result.as_numpy("text").reshape(-1)[0].decode()
    finally:
        client.close()


def stream_grpc(url: str, prompt: str, max_new_tokens: int, timeout: float = 60, **settings) -> list[str]:
    """The pieces a gRPC stream client receives from generate_stream, in order."""
    import tritonclient.grpc as grpc

    received: queue.Queue = queue.Queue()
    client = grpc.InferenceServerClient(url)
    try:
        client.start_stream(callback=lambda result, error: received.put((result, error)))
        client.async_stream_infer("generate_stream", text_inputs(grpc, prompt, max_new_tokens, **settings),
                                  enable_empty_final_response=True)
        pieces = []
        while True:
            result, error = received.get(timeout=timeout)
            if error is not None:
                raise error
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces
            pieces.append(result.as_numpy("text").reshape(-1)[0].decode())
    finally:
        client.stop_stream()
        client.close()
