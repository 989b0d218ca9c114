"""`python -m distill.teacher.build_server`: llama.cpp's own server, built from llama-cpp-python's sdist.

llama-cpp-python's Python server answers one request at a time; llama.cpp's C++ server decodes many
sequences per step (parallel slots, continuous batching). PyPI has no wheel of it, but the sdist
llama-cpp-python already compiles carries the whole llama.cpp tree, so the same pinned version is
downloaded through pip (the package registry, nothing else) and only the `llama-server` target is
built, statically, into this environment's bin/ (about 5 minutes on 2 cores). `make install` runs it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from distill.io import atomic_path

# AMX is compiled out: VMs that report AMX without enabling its tile state segfault in AMX matmuls.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON",
               "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               # the web UI would be fetched from a hub at build time: the API alone is served
               "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF",
               f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]


def default_target() -> Path:
    return Path(sys.executable).parent / "llama-server"


def build(target: Path, version: str | None = None, log=print) -> Path:
    version = version or metadata.version("llama_cpp_python")
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        t = Path(tmp)
        log(f"llama-server: downloading the llama-cpp-python {version} sdist")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama_cpp_python=={version}", "-d", str(t)], check=True)
        sdist = next(t.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(t, filter="data")
        src = next(t.glob("llama_cpp_python-*/vendor/llama.cpp"))
        log(f"llama-server: building llama.cpp's server ({jobs} jobs, about 5 minutes on 2 cores)")
        _quiet(["cmake", "-S", str(src), "-B", str(t / "build"), *CMAKE_FLAGS], t / "build.log")
        _quiet(["cmake", "--build", str(t / "build"), "--target", "llama-server", "-j", jobs], t / "build.log")
        with atomic_path(target) as tmp_target:  # a half-copied binary is never found under the real name
            shutil.copy2(t / "build" / "bin" / "llama-server", tmp_target)
    log(f"llama-server: {target}")
    return target


def _quiet(cmd: list[str], log: Path) -> None:
    """Run a build step into a log; on failure show its last lines (the compiler's warnings otherwise stay out)."""
    with open(log, "a") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if code:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        sys.exit("\n".join(tail + [f"llama-server: `{' '.join(cmd[:2])} ...` failed with exit code {code}"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=Path, default=default_target(), help="where the binary goes (default: %(default)s)")
    ap.add_argument("--if-missing", action="store_true", help="do nothing when the target already exists")
    args = ap.parse_args()
    if args.if_missing and args.target.exists():
        print(f"llama-server: {args.target} (already built)")
        return
    if shutil.which("cmake") is None:
        sys.exit("llama-server: cmake not found (apt-get install cmake, or pip install cmake)")
    build(args.target)


if __name__ == "__main__":
    main()
