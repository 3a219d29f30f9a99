"""`run.py serve` as a child process, for the tests and the serving benchmarks, on 127.0.0.1.

A child server is always stopped by whoever started it: SIGTERM, then SIGKILL of its process group
if it does not exit in time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

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


class ChildServer:
    """A server child process with its own process group, its output in a file."""

    def __init__(self, argv: list[str], log: Path, http_port: int, grpc_port: int | None = None,
                 env: dict | None = None):
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

    def wait_until(self, ready: Callable[[], bool], timeout: float = 180) -> None:
        """Until `ready()` says yes (its exceptions mean not yet); fails if the server exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.3)
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


class OpenAIServer(ChildServer):
    """`run.py serve --api openai` as a child process."""

    def __init__(self, model: tuple[str, ...], workdir: str, log: Path, *flags: str, port: int | None = None,
                 env: dict | None = None):
        port = port or free_ports(1)[0]
        super().__init__([sys.executable, "run.py", "serve", *model, "--working-dir", workdir, "--host", HOST,
                          "--port", str(port), *flags], log, port, env=env)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}/v1"

    def wait_healthy(self, timeout: float = 300) -> None:
        def healthy() -> bool:
            with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/health", timeout=5) as r:
                return json.loads(r.read()).get("status") == "ok"

        self.wait_until(healthy, timeout)
