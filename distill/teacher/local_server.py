"""llama-cpp-python's OpenAI-compatible server: the offline default's local teacher (on a free loopback port,
started for the run and always stopped, even when its parent dies by SIGKILL) and `distill serve-model`."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from distill.config import Teacher, resolve_path
from distill.models.load import default_gguf
from distill.teacher.request import TeacherError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_server_cmd(gguf: Path, alias: str, *, host: str, port: int, n_ctx: int, threads: int | None) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server over one GGUF (through distill's crash-safe wrapper)."""
    # llama-cpp-python defaults to half the cores; a dedicated server should use them all
    n = str(threads or os.cpu_count() or 1)
    return [sys.executable, "-m", "distill.teacher.llama_server", "--model", str(gguf), "--model_alias", alias,
            "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", n, "--n_threads_batch", n]


@contextmanager
def local_server(cfg: Teacher, log_path: Path | None = None) -> Iterator[str]:
    """The local teacher's llama.cpp server on a free loopback port; yield its base URL; always stop it."""
    local = cfg.endpoint.local
    gguf = resolve_path(local.gguf) if local.gguf else default_gguf()
    if not gguf.exists():
        raise FileNotFoundError(f"teacher.endpoint.local.gguf: {gguf} not found")
    port = free_port()
    cmd = llama_server_cmd(gguf, cfg.model, host="127.0.0.1", port=port, n_ctx=local.n_ctx, threads=local.n_threads)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
    else:
        log = subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent)
    if log_path is not None:
        log_path.with_suffix(".pid").write_text(str(proc.pid))
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(proc, base_url, local.startup_timeout_s, "local llama.cpp server", log_path)
        yield base_url
    finally:
        _stop(proc)
        if log is not subprocess.DEVNULL:
            log.close()


def wait_until_serving(proc: subprocess.Popen, base_url: str, timeout_s: float, what: str,
                       log_path: Path | None = None) -> None:
    """Block until an OpenAI-protocol server started as proc lists its models; raise if it dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise TeacherError(f"{what} exited with code {proc.returncode} (log: {log_path})")
        try:
            if httpx.get(base_url + "/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TeacherError(f"{what} did not answer within {timeout_s} s (log: {log_path})")
        time.sleep(0.25)


def _die_with_parent() -> None:
    """Linux: kill the server when the process that started it dies, even by SIGKILL.

    SIGKILL, not SIGTERM: a graceful shutdown first finishes the request in flight, which under load
    kept an orphan busy for seconds. The server holds nothing worth flushing.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
