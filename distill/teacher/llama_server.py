"""`python -m distill.llama_server ARGS`: llama-cpp-python's OpenAI-compatible server, safe on these CPUs.

llama.cpp places weights in "extra" CPU buffer types (AMX, repacked layouts) when the CPU reports
support. On VMs that report AMX without enabling its tile state, the AMX matmul segfaults on the
first multi-token batch (seen with llama-cpp-python 0.3.36), so extra buffers are off unless
DISTILL_LLAMA_EXTRA_BUFFERS=1. Everything else is the stock `python -m llama_cpp.server`.
"""
from __future__ import annotations

import os


def _no_extra_buffers() -> None:
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params


def main() -> None:
    if os.environ.get("DISTILL_LLAMA_EXTRA_BUFFERS") != "1":
        _no_extra_buffers()
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
