"""Issue 16's classes, each reproduced against the real CLI and a fake teacher: one writer per run
directory, fatal teacher errors that stop the run, secrets that stay out of files, safe names."""
import os
import signal
import subprocess
import sys
import threading
import time

from typer.testing import CliRunner

from distill.cli import app
from distill.io import read_jsonl
from distill.rundir import RunDir, RunDirInUse
from distill.testing.fake_openai import FakeOpenAI, plausible_reply
from tests.conftest import ROOT, distill_cmd

SENTINEL = "sk-SENTINEL-4b1d9e"


def _teacher(fake, *extra):
    sets = ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}",
            "teacher.model=fake-model", "teacher.endpoint.backoff_base_s=0.01", "generation.input_requests=6",
            "generation.inputs_per_request=2", *extra]
    return [a for s in sets for a in ("--set", s)]


def _slowly(seconds: float):
    """A teacher that takes its time, so a second process or a kill lands while requests are in flight."""
    def reply(body):
        time.sleep(seconds)
        return plausible_reply(body)
    return reply


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def test_two_generate_processes_on_one_run_directory_send_each_request_once(tmp_path):
    """Break caught: no run-directory lock (both processes send every request: 36 instead of 18)."""
    rd, env = tmp_path / "run", _env()
    with FakeOpenAI(reply=_slowly(0.5)) as fake:
        cmd = distill_cmd("generate", "--run-dir", str(rd), *_teacher(fake, "teacher.endpoint.max_concurrency=1"))
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and f"run directory in use by pid {first.pid}" in second.stderr, second.stderr
    keys = [r["key"] for r in read_jsonl(rd / "data" / "requests.jsonl")]
    assert len(fake.requests) == len(keys) == len(set(keys)) == 6 + 12


def test_the_lock_is_per_process_reentrant_and_dies_with_its_holder(tmp_path):
    """Breaks caught: a lock that outlives a killed holder (a stale .lock file), or that a flow's own
    stages trip over."""
    rd = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from distill.rundir import RunDir\n"
        f"with RunDir({str(rd.root)!r}).lock():\n    print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        rd.lock().__enter__()
        raise AssertionError("a second process took the lock")
    except RunDirInUse as e:
        assert f"in use by pid {holder.pid}" in str(e)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with rd.lock(), rd.lock():  # the flow holds it and so does each of its stages
        pass


def test_run_directories_started_in_the_same_second_are_distinct(tmp_path):
    """Break caught: RunDir.new checking exists() and creating later (two runs share one directory)."""
    made, barrier = [], threading.Barrier(8)

    def one():
        barrier.wait()
        made.append(RunDir.new(tmp_path).root)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)


def test_a_rejected_key_stops_the_run_naming_authentication_and_is_never_stored(tmp_path):
    """Breaks caught: 401 counted as one more failed request (exit 0, training on the seeds alone),
    and an error body that echoes the key stored as is."""
    rd = tmp_path / "run"
    with FakeOpenAI(default={"status": 401, "echo_auth": True}) as fake:
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, f"teacher.api_key={SENTINEL}",
                                                                      "teacher.endpoint.max_concurrency=1"))
    out = " ".join(out.split())
    assert code == 2 and "authentication failed" in out and "HTTP 401" in out, out
    assert len(fake.requests) == 1  # nothing sent after the first rejection
    assert not (rd / "data" / "generated.jsonl").exists()
    assert all(f"Bearer {SENTINEL}" == h.get("authorization") for h in fake.headers_seen if "authorization" in h)
    for p in [p for p in rd.rglob("*") if p.is_file()]:
        assert SENTINEL.encode() not in p.read_bytes(), p
    assert SENTINEL not in out


def test_every_request_failing_stops_the_run_with_the_common_error(tmp_path):
    """Break caught: a generation with no usable row written and handed to training (seeds only)."""
    rd = tmp_path / "run"
    with FakeOpenAI(default={"status": 500}) as fake:
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, "teacher.endpoint.max_retries=0"))
        out = " ".join(out.split())
        assert code == 2 and "no usable row: 6 of 6 input requests failed" in out and "InternalServerError(500)" in out
        assert not (rd / "data" / "generated.jsonl").exists()
        code, out = _cli("generate", "--run-dir", str(rd), "--force", *_teacher(fake, "teacher.endpoint.max_retries=0",
                                                                                 "generation.seeds_only_ok=true"))
    assert code == 0 and len(read_jsonl(rd / "data" / "generated.jsonl")) > 0, out


def test_a_teacher_that_never_answers_usefully_stops_the_run(tmp_path):
    """Break caught: every reply unusable (blank: a failure; or chatter: no input parsed), and the run
    going on with the seeds alone (exit 0)."""
    rd = tmp_path / "run"
    with FakeOpenAI(reply=lambda body: "") as fake:
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, "teacher.endpoint.max_retries=0"))
    out = " ".join(out.split())
    assert code == 2 and "no usable row: 6 of 6 input requests failed" in out and "EmptyReply" in out, out
    assert len(fake.requests) == 6 and not (rd / "data" / "generated.jsonl").exists()
    with FakeOpenAI(reply=lambda body: "Sure, happy to help.") as fake:
        code, out = _cli("generate", "--run-dir", str(tmp_path / "run2"), *_teacher(fake))
    out = " ".join(out.split())
    assert code == 2 and "no usable row: 0 of 6 input requests failed, 0 inputs parsed" in out, out


def test_credentials_in_the_teacher_url_are_neither_saved_nor_printed(tmp_path):
    """Break caught: config.yaml and the unreachable-teacher error carrying user:pass@."""
    from distill.teacher.gguf_server import free_port

    rd = tmp_path / "run"
    url = f"http://alice:hunter2secret@127.0.0.1:{free_port()}/v1"
    code, out = _cli("generate", "--run-dir", str(rd), "--set", "teacher.endpoint.launch_local=false",
                     "--set", f"teacher.endpoint.base_url={url}")
    assert code == 2 and "unreachable" in out and "hunter2secret" not in out and "***@127.0.0.1" in out, out
    with FakeOpenAI() as fake:
        url = fake.base_url.replace("http://", "http://alice:hunter2secret@")
        code, out = _cli("generate", "--run-dir", str(rd), "--set", "teacher.endpoint.launch_local=false",
                         "--set", f"teacher.endpoint.base_url={url}", "--set", "teacher.model=fake-model",
                         "--set", "generation.input_requests=2")
    assert code == 0, out
    assert "hunter2secret" not in (rd / "config.yaml").read_text() and "hunter2secret" not in out


def test_a_dripping_server_is_abandoned_at_the_deadline(tmp_path):
    """Break caught: timeout_s bounding each read only (a byte a second never trips it; generate stalls)."""
    rd = tmp_path / "run"
    with FakeOpenAI(default={"fault": "drip"}) as fake:
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, "teacher.endpoint.timeout_s=2",
                                                                      "teacher.endpoint.max_retries=0",
                                                                      "generation.input_requests=2"))
    out = " ".join(out.split())
    # two requests at once, each abandoned at its deadline (the body alone would take over an hour:
    # without the deadline this test does not end)
    assert code == 2 and "DeadlineExceeded(timeout_s=2) x2" in out, out


def test_a_retry_after_beyond_the_cap_stops_the_run_with_its_reason(tmp_path):
    """Break caught: Retry-After: 86400 honoured without a cap (the run sleeps for a day)."""
    rd = tmp_path / "run"
    with FakeOpenAI(default={"status": 429, "headers": {"Retry-After": "86400"}}) as fake:
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, "teacher.endpoint.max_concurrency=1"))
    out = " ".join(out.split())
    assert code == 2 and "asked to wait 86400 s (Retry-After)" in out and "max_retry_after_s=600" in out, out
    assert len(fake.requests) == 1


def test_distill_run_with_a_rejected_key_stops_after_one_request_without_retrying_the_stage(tmp_path):
    """Breaks caught: the flow retrying the generate task (retries=2) on a fatal error, and the run
    going on to train on the seeds alone."""
    rd, env = tmp_path / "run", _env()
    with FakeOpenAI(default={"status": 401}) as fake:
        r = subprocess.run(distill_cmd("run", "--run-dir", str(rd), *_teacher(fake, "teacher.endpoint.max_concurrency=1")),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "error: teacher: authentication failed" in err, r.stderr[-3000:]
    assert len(fake.requests) == 1 and not (rd / "student").exists() and not (rd / "data" / "train.jsonl").exists()


def test_a_run_directory_refuses_another_config_unless_forced(tmp_path):
    """Break caught: generate re-run with another config silently replacing config.yaml while the store
    and stats mixed both configs' requests."""
    from distill.io import read_json

    rd = tmp_path / "run"
    with FakeOpenAI() as fake:
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, "generation.input_requests=2"))
        assert code == 0, out
        saved, sent = (rd / "config.yaml").read_text(), len(fake.requests)
        code, out = _cli("generate", "--run-dir", str(rd), *_teacher(fake, "generation.input_requests=3"))
        out = " ".join(out.split())
        assert code == 2 and "made with another config (generation.input_requests: 2 -> 3)" in out, out
        assert (rd / "config.yaml").read_text() == saved and len(fake.requests) == sent
        code, out = _cli("generate", "--run-dir", str(rd), "--force", *_teacher(fake, "generation.input_requests=3"))
    assert code == 0, out
    assert "input_requests: 3" in (rd / "config.yaml").read_text()
    assert len(read_json(rd / "stats" / "generate.json")["invocations"]) == 1  # a fresh history, not a mixed one


def test_a_torn_middle_line_of_the_store_is_named_then_set_aside_losing_only_its_request(tmp_path):
    """Break caught: one damaged line in the middle of data/requests.jsonl made every later generate
    fail for good with a JSONDecodeError traceback naming no file or line."""
    rd = tmp_path / "run"
    with FakeOpenAI() as fake:
        args = _teacher(fake, "generation.input_requests=3")
        assert _cli("generate", "--run-dir", str(rd), *args)[0] == 0
        store = rd / "data" / "requests.jsonl"
        lines = store.read_text().splitlines(True)
        torn = lines[1][:40] + "\n"
        store.write_text("".join([lines[0], torn, *lines[2:]]))
        sent = len(fake.requests)
        code, out = _cli("generate", "--run-dir", str(rd), *args)
        assert code == 2 and f"{store}:2: not a JSON record" in " ".join(out.split()) and len(fake.requests) == sent, out
        code, out = _cli("doctor", "--run-dir", str(rd))
        assert code == 1 and f"{store}:2: not a JSON record" in " ".join(out.split()), out
        code, out = _cli("doctor", "--run-dir", str(rd), "--fix")
        assert code == 0 and (rd / "data" / "requests.jsonl.damaged").read_text() == torn, out
        code, out = _cli("generate", "--run-dir", str(rd), *args)
        assert code == 0, out
        assert len(fake.requests) == sent + 1  # the one request whose record was lost, nothing else
    assert _cli("doctor", "--run-dir", str(rd))[0] == 0
