"""`python -m distill.teacher.build_server`: llama.cpp, compiled once, for both local engines.

llama-cpp-python's Python server answers one request at a time; llama.cpp's C++ server decodes many
sequences per step (parallel slots, continuous batching). PyPI has no wheel of either, and compiling
llama.cpp is most of a fresh install (about 5 minutes on 2 cores). The sdist llama-cpp-python builds
carries the whole llama.cpp tree, so the same pinned version is downloaded through pip (the package
registry, nothing else) and built once, as shared libraries: `llama-server` goes into this
environment's bin/, and the libraries into llama-cpp-python's own lib/ folder, where its bindings load
them. `make install` installs llama-cpp-python without compiling (CMAKE_ARGS=-DLLAMA_BUILD=OFF), then
runs this; a plain `pip install 'distill[local]'` compiles llama-cpp-python itself and this replaces
its libraries with the same version's.
"""
from __future__ import annotations

import argparse
import importlib.util
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
CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_SERVER=ON",
               "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               # the web UI would be fetched from a hub at build time: the API alone is served
               "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF",
               f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]


def default_target() -> Path:
    return Path(sys.executable).parent / "llama-server"


def bindings_lib_dir() -> Path | None:
    """The folder llama-cpp-python loads its shared libraries from, or None when it is not installed."""
    spec = importlib.util.find_spec("llama_cpp")
    return Path(spec.origin).parent / "lib" if spec and spec.origin else None


def missing(target: Path) -> bool:
    """Whether the server or the bindings' libraries still have to be built."""
    lib = bindings_lib_dir()
    return not target.exists() or (lib is not None and not (lib / "libllama.so").exists())


def build(target: Path, version: str | None = None, log=print) -> Path:
    version = version or metadata.version("llama_cpp_python")
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        t = Path(tmp)
        log(f"llama-server: downloading the llama-cpp-python {version} sdist")
        subprocess.run([sys.executable, "-m", "pip", "download", "-qq", "--no-deps", "--no-binary", ":all:",
                        f"llama_cpp_python=={version}", "-d", str(t)], check=True)
        sdist = next(t.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(t, filter="data")
        src = next(t.glob("llama_cpp_python-*/vendor/llama.cpp"))
        lib = bindings_lib_dir() or target.parent.parent / "lib" / "llama.cpp"
        log(f"llama-server: building llama.cpp ({jobs} jobs, about 5 minutes on 2 cores)")
        # the libraries find each other, and the server finds them, in `lib` (their RPATH)
        rpath = [f"-DCMAKE_INSTALL_RPATH={lib}", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON"]
        _quiet(["cmake", "-S", str(src), "-B", str(t / "build"), *CMAKE_FLAGS, *rpath], t / "build.log")
        _quiet(["cmake", "--build", str(t / "build"), "--target", "llama-server", "llama", "-j", jobs], t / "build.log")
        install_libraries(t / "build" / "bin", lib)
        with atomic_path(target) as tmp_target:  # a half-copied binary is never found under the real name
            shutil.copy2(t / "build" / "bin" / "llama-server", tmp_target)
    log(f"llama-server: {target}; libraries: {lib}")
    return target


def install_libraries(built: Path, lib: Path) -> None:
    """Every shared library of the build into lib, each file and link replaced whole."""
    lib.mkdir(parents=True, exist_ok=True)
    for f in sorted(built.glob("*.so*")):
        if f.is_symlink():
            tmp = lib / f".{f.name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.readlink(f))
            os.replace(tmp, lib / f.name)
        else:
            with atomic_path(lib / f.name) as tmp_file:
                shutil.copy2(f, tmp_file)


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
    if args.if_missing and not missing(args.target):
        print(f"llama-server: {args.target} (already built)")
        return
    if shutil.which("cmake") is None:
        sys.exit("llama-server: cmake not found (apt-get install cmake, or pip install cmake)")
    build(args.target)


if __name__ == "__main__":
    main()
