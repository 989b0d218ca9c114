"""What every benchmark does with its result: stamp it, print it, append it to results/<name>.jsonl."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def record(name: str, result: dict) -> dict:
    out = {"benchmark": name, "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", **result}
    print(json.dumps(out))
    path = Path(__file__).parent / "results" / f"{name}.jsonl"
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(out) + "\n")
    return out
