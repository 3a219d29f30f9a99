"""Clients of the served `generate` models (tritonclient), and `run.py serve --api triton` as a child
process (child_server.py) for the tests and benchmarks/serve_speed.py."""

from __future__ import annotations

import queue
import sys

import numpy as np

from NNDF.serving.child_server import HOST, ChildServer, free_ports  # noqa: F401  (the tests import them here)


class ServerProcess(ChildServer):
    """`run.py serve --api triton` as a child process."""

    def wait_ready(self, model: str = "generate", timeout: float = 180) -> None:
        """Until Triton says `model` is ready (or the server exits, or `timeout` passes)."""
        import tritonclient.http as http

        def ready() -> bool:
            client = http.InferenceServerClient(self.http_url)
            try:
                return client.is_model_ready(model)
            finally:
                client.close()

        self.wait_until(ready, timeout)


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
