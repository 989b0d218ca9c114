"""One `distill run` prepares its run once: the config is checked and the teacher probed once (the CLI
and the flow it starts share the prepared context), and the seed file is read once, then handed
forward to every stage."""
import sys

import pytest
from typer.testing import CliRunner

import distill.io
from distill.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow


def test_distill_run_probes_the_teacher_once_and_reads_the_seeds_once(tmp_path, monkeypatch):
    from distill.cli import app

    seed_reads = []
    real = distill.io.load_examples

    def counting(path, *a, **kw):
        if kw.get("what") == "seed file":
            seed_reads.append(str(path))
        return real(path, *a, **kw)

    # every module that took load_examples by name reads through the counter
    for mod in [m for name, m in sys.modules.items() if name.startswith("distill") and m is not None]:
        if getattr(mod, "load_examples", None) is real:
            monkeypatch.setattr(mod, "load_examples", counting)
    rd = tmp_path / "run"
    with FakeOpenAI() as fake:
        sets = ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}",
                "teacher.model=fake-model", "generation.input_requests=4", "training.max_steps=2",
                "eval.max_rows=4", "eval.max_new_tokens=8", "eval.models=[teacher, student]"]
        r = CliRunner().invoke(app, ["run", "--run-dir", str(rd), *[a for s in sets for a in ("--set", s)]])
        assert r.exit_code == 0, r.output
    assert (rd / "report.json").exists()
    probes = [p for p in fake.gets if p.rstrip("/").endswith("/models")]
    assert probes == ["/v1/models"], fake.gets  # preflight's one look at the teacher
    assert len(seed_reads) == 1, seed_reads
    # requests went out for generation and for the teacher's evaluation: the one probe was not for want of use
    assert len(fake.requests) > 4
