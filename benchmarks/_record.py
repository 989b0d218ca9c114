"""What every benchmark does with its result: stamp it, print it, append it to results/<name>.jsonl."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (absolute figures differ between machines: stated beside every one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def record(name: str, result: dict) -> dict:
    out = {"benchmark": name, "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "cpu": cpu_model(), **result}
    print(json.dumps(out))
    path = Path(__file__).parent / "results" / f"{name}.jsonl"
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(out) + "\n")
    return out
