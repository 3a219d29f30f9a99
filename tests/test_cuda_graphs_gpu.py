"""The CUDA-graph path on real CUDA with torch alone (issue 24): TrtSession's stream class
(trt_env.CudaStream, from trt_env.open_stream) and the capture and replay code (cuda_graphs.GraphRunner)
run a small torch workload in place of a TensorRT execution context. Everywhere else the stand-in
replaces the stream class, so this is what proves, on a GPU whose image has no TensorRT, that the
capture code captures, replays at the recorded addresses with new input values, keeps a graph per
shape, and falls back when an enqueue cannot be captured. Needs only torch with CUDA; skips without.
Not yet run anywhere: no GPU has been lent since it was written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from NNDF.runtime import trt_env
from NNDF.runtime.cuda_graphs import GraphRunner

pytestmark = pytest.mark.gpu


class TorchContext:
    """An execution context whose 'engine' is y = tanh(x @ w) + rowsum(x): it remembers the tensors
    bound to it (their addresses, as TensorRT does) and enqueues torch kernels on the current stream,
    which CudaStream makes its own stream both when running and when capturing."""

    def __init__(self, w: torch.Tensor, stream: trt_env.CudaStream, log: list):
        self.w, self.stream, self.log, self.bound = w, stream, log, None

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert stream_handle == self.stream.handle != 0      # the dedicated stream, never the legacy default
        x, y = self.bound["x"], self.bound["y"]
        y.copy_(torch.tanh(x @ self.w) + x.sum(-1, keepdim=True))
        self.log.append(x.data_ptr())
        return True


@pytest.fixture
def runner(cuda):
    device = torch.device("cuda", torch.cuda.current_device())
    stream = trt_env.open_stream(device)
    w = torch.randn(8, 5, device=device)
    log: list = []

    def bind(context, inputs, outputs):
        context.bound = {**inputs, **outputs}

    def enqueue(context):
        assert context.execute_async_v3(stream.handle)

    graphs = GraphRunner(device, stream, lambda: TorchContext(w, stream, log), bind, enqueue)
    return graphs, stream, w, log


def step(graphs: GraphRunner, stream: trt_env.CudaStream, x: np.ndarray) -> np.ndarray:
    """One step as TrtSession.run takes it in graph mode: inputs staged, an output buffer picked,
    the graph replayed or captured, all on the session's stream."""
    with stream.active():
        inputs = {"x": graphs.input("x", x, torch.float32)}
        outputs = {"y": graphs.output("y", (x.shape[0], 5), torch.float32, inputs)}
        assert graphs.execute(inputs, outputs)
        stream.synchronize()
        return outputs["y"].cpu().numpy()


def expected(x: np.ndarray, w: torch.Tensor) -> np.ndarray:
    w = w.cpu().numpy().astype(np.float64)
    return np.tanh(x @ w) + x.sum(-1, keepdims=True)


def test_a_step_is_captured_once_then_replayed_with_new_values(runner):
    graphs, stream, w, log = runner
    rng = np.random.default_rng(0)
    for i in range(4):
        x = rng.standard_normal((3, 8)).astype(np.float32)
        # fp32 on CUDA with TF32 off for matmul (torch's default): only summation order differs
        np.testing.assert_allclose(step(graphs, stream, x), expected(x, w), rtol=1e-5, atol=1e-5)
    assert (graphs.captures, graphs.replays) == (1, 3)
    # the run before capture and the capture itself each enqueued once; replays enqueue nothing new
    assert len(log) == 2 and len(set(log)) == 1            # every step read the one staged buffer


def test_another_shape_gets_a_graph_of_its_own(runner):
    """3 rows, then 5 (the output buffer grows: a new address), then 3 again (captured once more at
    the grown buffer's address); from then on both shapes replay: buffers settle after growing."""
    graphs, stream, w, _ = runner
    rng = np.random.default_rng(1)
    for rows in (3, 5, 3, 5, 3, 5):
        x = rng.standard_normal((rows, 8)).astype(np.float32)
        np.testing.assert_allclose(step(graphs, stream, x), expected(x, w), rtol=1e-5, atol=1e-5)
    assert (graphs.captures, graphs.replays) == (3, 3)


def test_capture_and_replay_through_the_stream_class_itself(cuda):
    device = torch.device("cuda", torch.cuda.current_device())
    stream = trt_env.open_stream(device)
    with stream.active():
        x = torch.zeros(4, device=device)
        y = torch.zeros(4, device=device)
    graph = stream.capture(lambda: bool(y.copy_(x * 2 + 1).numel()))
    for value in (1.0, 3.0):
        with stream.active():
            x.fill_(value)
            graph.replay()
        stream.synchronize()
        assert y.cpu().tolist() == [value * 2 + 1] * 4
    with pytest.raises(RuntimeError, match="refused to enqueue"):
        stream.capture(lambda: False)


def test_an_enqueue_that_cannot_be_captured_falls_back(runner, caplog):
    graphs, stream, _, _ = runner
    original = TorchContext.execute_async_v3
    calls = {"n": 0}

    def refuses_in_capture(self, handle):
        calls["n"] += 1
        return original(self, handle) if calls["n"] == 1 else False   # runs once, then refuses to be captured

    TorchContext.execute_async_v3 = refuses_in_capture
    try:
        x = np.ones((2, 8), np.float32)
        with stream.active():
            inputs = {"x": graphs.input("x", x, torch.float32)}
            outputs = {"y": graphs.output("y", (2, 5), torch.float32, inputs)}
            assert graphs.execute(inputs, outputs) is False
    finally:
        TorchContext.execute_async_v3 = original
    assert "cannot be captured" in caplog.text and graphs.captures == 0
