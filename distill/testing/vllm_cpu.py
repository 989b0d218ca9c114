"""A real vLLM OpenAI server on this CPU, for the opt-in `pytest -m vllm` tests and the saturation
benchmark. vLLM lives in its own venv (`make vllm-env`); it serves the bundled SmolLM2 GGUF converted
to a plain model directory (the same conversion the default student uses)."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distill.teacher.gguf_server import wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
SERVED_NAME = "SmolLM2-135M-Instruct"


def vllm_python() -> Path | None:
    """The vLLM venv's interpreter ($DISTILL_VLLM_PYTHON, else .venv-vllm), or None when absent."""
    p = Path(os.environ.get("DISTILL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
    return p if p.exists() else None


def vllm_env(python: Path) -> dict:
    venv = python.parent.parent
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "PYTHONPATH": str(ROOT)}
    omp = venv / "lib" / "libiomp5.so"  # the CPU build's OpenMP runtime must come first
    if omp.exists():
        env["LD_PRELOAD"] = str(omp)
    return env


def model_dir() -> Path:
    from distill.config import Student
    from distill.models.load import base_student_dir

    return base_student_dir(Student())


@contextmanager
def vllm_server(python: Path, port: int, log_path: Path, timeout_s: float = 300) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` (the `vllm` script fails on the distribution
    name of the CPU build) in float32 and eager mode (bf16 with torch.compile answered wrongly)."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir()),
           "--served-model-name", SERVED_NAME, "--dtype", "float32", "--enforce-eager",
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048"]
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(python), start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(proc, url, timeout_s, "vLLM server", log_path)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
