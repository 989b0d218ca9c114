"""A GGUF behind an OpenAI-protocol server on a free loopback port, started for the run and always stopped,
even when its parent dies by SIGKILL: the offline default's local teacher (`local_server`), the
evaluation's self-hosted models (`serve_gguf`) and `distill serve-model`.

Two engines serve a GGUF: llama.cpp's own server (`llama-server`, built by `distill.teacher.build_server`:
parallel slots decoded together, continuous batching) and llama-cpp-python's server (one request at a
time). `auto` takes llama-server when it is built, else says so once and takes llama-cpp-python.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from distill.config import LocalServer, TeacherConfig, resolve_path
from distill.models.load import cache_dir, cpu_bf16, default_gguf, gguf_as_hf
from distill.teacher.request import TeacherError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_server_binary() -> Path | None:
    """The built llama-server: $DISTILL_LLAMA_SERVER, this environment's bin/, or the PATH."""
    if os.environ.get("DISTILL_LLAMA_SERVER"):
        given = Path(os.environ["DISTILL_LLAMA_SERVER"])
        return given if given.is_file() else None
    here = Path(sys.executable).parent / "llama-server"
    if here.exists():
        return here
    found = shutil.which("llama-server")
    return Path(found) if found else None


def engine_of(local: LocalServer) -> str:
    """The engine `teacher.endpoint.local.engine` resolves to here: llama-server or llama-cpp-python."""
    if local.engine != "auto":
        return local.engine
    return "llama-server" if llama_server_binary() is not None else "llama-cpp-python"


def teacher_gguf(local: LocalServer) -> Path:
    """The configured GGUF as served: re-encoded to `weights` (auto: `served_type()`), or as it is."""
    gguf = resolve_path(local.gguf) if local.gguf else default_gguf()
    if not gguf.exists():
        raise FileNotFoundError(f"teacher.endpoint.local.gguf: {gguf} not found")
    if local.weights == "original":
        return gguf
    return reencoded(gguf, served_type() if local.weights == "auto" else local.weights)


def served_type() -> str:
    """How llama-server holds the local teacher and every self-hosted model evaluated beside it: bf16 where
    the CPU computes bf16 natively, else q8_0. Both keep the bundled Q4_1 values to within 8-bit rounding
    (greedy answers 183 and 182 of 192 identical to the old server's); on 2 Zen 4 cores with 8 slots bf16
    decodes 1.07-1.22x the output tokens/s of Q8_0 (3.1-3.2x the old server's, Q8_0 2.6x; benchmarks/local_teacher.py)."""
    return "bf16" if cpu_bf16() else "q8_0"


def served_gguf(gguf: Path) -> Path:
    """The GGUF re-encoded as llama-server serves every self-hosted model here (`served_type`)."""
    return reencoded(gguf, served_type())


def reencoded(gguf: Path, quant: str) -> Path:
    """A GGUF re-encoded to bf16, q8_0 or q4_0, written once into the cache (itself when it already is that type).

    llama.cpp runs the bundled Q4_1 SmolLM2 1.4-1.6x faster as Q8_0 on these CPUs (Q4_1 has no fast
    kernels here), 1.07-1.22x faster again as BF16 (AVX512-BF16 dot products), and as Q4_0 (repacked into
    llama.cpp's interleaved AVX-512 layout at load) 1.5x faster than Q8_0; BF16 and Q8_0 keep the Q4_1
    values to within 8-bit rounding, Q4_0 rounds them onto a coarser grid (all but the output layer,
    which stays Q8_0).
    """
    if quant in gguf.name.lower():
        return gguf
    from distill.models.gguf_export import OUTPUT_LAYER, write_gguf

    # the recipe is in the name: a file cached under an older recipe is never served for this one
    recipe = quant + (f"-{OUTPUT_LAYER[quant]}-output" if quant in OUTPUT_LAYER else "")
    target = cache_dir() / "gguf" / f"{gguf.stem}.{recipe}.gguf"
    if not target.exists() or target.stat().st_mtime < gguf.stat().st_mtime:
        write_gguf(gguf_as_hf(gguf), target, quant=quant, name=gguf.stem, reference=gguf)
    return target


def server_cmd(engine: str, gguf: Path, alias: str, *, host: str, port: int, n_ctx: int, threads: int | None,
               slots: int = 1) -> list[str]:
    """The command serving one GGUF under `alias` over the OpenAI protocol (n_ctx tokens per slot)."""
    # llama.cpp defaults to half the cores; a dedicated server should use them all
    n = str(threads or os.cpu_count() or 1)
    if engine == "llama-server":
        binary = llama_server_binary()
        if binary is None:
            raise TeacherError("llama-server not found: build it with `python -m distill.teacher.build_server` "
                               "(or set teacher.endpoint.local.engine: llama-cpp-python)")
        # llama.cpp repacks Q4_0 weights into interleaved layouts for its AVX-512 kernels at load; the AMX
        # buffer type that crashes llama-cpp-python on these VMs is not compiled into this build (build_server)
        return [str(binary), "--model", str(gguf), "--alias", alias, "--host", host, "--port", str(port),
                "--ctx-size", str(n_ctx * slots), "--parallel", str(slots), "--threads", n, "--threads-batch", n,
                "--jinja", "--no-webui"]
    return llama_server_cmd(gguf, alias, host=host, port=port, n_ctx=n_ctx, threads=threads)


def llama_server_cmd(gguf: Path, alias: str, *, host: str, port: int, n_ctx: int, threads: int | None) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server over one GGUF (through distill's crash-safe wrapper)."""
    n = str(threads or os.cpu_count() or 1)
    return [sys.executable, "-m", "distill.teacher.llama_server", "--model", str(gguf), "--model_alias", alias,
            "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", n, "--n_threads_batch", n]


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    engine: str  # llama-server | llama-cpp-python
    slots: int  # requests it decodes together; more in flight only queue
    gguf: Path

    @property
    def label(self) -> str:
        how = f"{self.slots} slots" if self.engine == "llama-server" else "one request at a time"
        return f"{self.engine} (local, {how}, {self.gguf.name})"


@contextmanager
def local_server(cfg: TeacherConfig, log_path: Path | None = None) -> Iterator[RunningServer]:
    """The local teacher's server on a free loopback port; yield where and how it serves; always stop it."""
    local = cfg.endpoint.local
    engine = engine_of(local)
    if local.engine == "auto" and engine == "llama-cpp-python":
        print("teacher: llama-server is not built, so the local teacher answers one request at a time "
              "(build it: python -m distill.teacher.build_server)", file=sys.stderr)
    with serve_gguf(engine, teacher_gguf(local), cfg.model, slots=local.parallel if engine == "llama-server" else 1,
                    n_ctx=local.n_ctx, threads=local.n_threads, log_path=log_path,
                    startup_timeout_s=local.startup_timeout_s) as srv:
        yield srv


@contextmanager
def serve_gguf(engine: str, gguf: Path, alias: str, *, slots: int, n_ctx: int, threads: int | None,
               log_path: Path | None = None, startup_timeout_s: float = 120.0) -> Iterator[RunningServer]:
    """One GGUF served under `alias` on a free loopback port until the block ends (even if this process dies)."""
    port = free_port()
    cmd = server_cmd(engine, gguf, alias, host="127.0.0.1", port=port, n_ctx=n_ctx, threads=threads, slots=slots)
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
        wait_until_serving(proc, base_url, startup_timeout_s, f"local {engine} server", log_path)
        yield RunningServer(base_url, engine, slots, gguf)
    finally:
        _stop(proc)
        if log is not subprocess.DEVNULL:
            log.close()


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (connections of a server gone, in TIME_WAIT, do not count:
    SO_REUSEADDR, as servers bind)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True


def serve_until_stopped(cmd: list[str], base_url: str, what: str, on_ready, startup_timeout_s: float = 120.0) -> int:
    """Run a server in the foreground until it exits or this process is interrupted or terminated
    (SIGTERM too); the server never outlives this process. `on_ready` runs once it answers."""
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent)

    def terminated(signum, frame):
        raise SystemExit(128 + signum)  # unwinds to the `finally` below, which stops the server

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        wait_until_serving(proc, base_url, startup_timeout_s, what)
        on_ready()
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(proc)


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
