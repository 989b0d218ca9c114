"""The flow as a deployment on a real `prefect server`, run by a process worker; a second trigger
with the same parameters re-executes no finished stage and sends no teacher request."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from distill.io import read_json, read_jsonl
from distill.teacher.gguf_server import free_port
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, TINY, distill_cmd

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).parent / "prefect")


def _start(cmd, env, log):
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_final(client, flow_run_id, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(2)
    pytest.fail(f"flow run {flow_run_id} did not finish in {timeout} s")


def _task_states(client, flow_run_id, expected: int, timeout=120) -> dict:
    """Task-run states reach the server as events, after the flow run itself is final: wait for all of them."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states = {t.name.rsplit("-", 1)[0]: t.state.name for t in tasks if t.state is not None and t.state.is_final()}
        if len(states) >= expected or time.monotonic() > deadline:
            return states
        time.sleep(2)




def _check_rendered_in_ui(ui: str, table_id, report_id, tmp_path: Path) -> None:
    """Open the run's artifacts in the Prefect UI with headless Chromium and read the rendered tables."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make test` does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            # the comparison table artifact: one rendered row per model
            page.goto(f"{ui}/artifacts/artifact/{table_id}", wait_until="domcontentloaded", timeout=120_000)
            page.locator("table td", has_text="distilled student").first.wait_for(timeout=120_000)
            rows = page.locator("table tbody tr")
            texts = rows.all_inner_texts()
            assert any("teacher" in t for t in texts) and any("base student" in t for t in texts), texts
            # the markdown report: its comparison table is rendered as HTML, not shown as pipes
            page.goto(f"{ui}/artifacts/artifact/{report_id}", wait_until="domcontentloaded", timeout=120_000)
            page.locator("table th", has_text="model").first.wait_for(timeout=120_000)
            body = page.locator("table").first.inner_text()
            assert "distilled student" in body and "|" not in body, body
            page.screenshot(path=str(tmp_path / "report-artifact.png"), full_page=True)
        finally:
            browser.close()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real `prefect server` on 127.0.0.1 (UI on) for this module; stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(home / "prefect-home"),
           "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(api + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
        yield port, api, env
    finally:
        _stop(server)


def test_deployment_runs_on_a_real_server_and_a_second_trigger_reuses_every_stage(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port, api, env = prefect_server
    rd = tmp_path / "nightly"
    worker = None
    try:
        sets = [a for s in [*TINY, "eval.models=[teacher,base_student,student]"] for a in ("--set", s)]
        r = subprocess.run(distill_cmd("deploy", "--name", "ci", "--pool", "ci-pool", "--run-dir", str(rd), *sets),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "deployment distill/ci" in r.stdout and "inactive" in r.stdout
        worker = _start([PREFECT, "worker", "start", "--pool", "ci-pool"], env, tmp_path / "worker.log")

        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("distill/ci")
            assert dep.schedules and not dep.schedules[0].active

            first = _wait_final(client, client.create_flow_run_from_deployment(dep.id).id)
            assert first.state.is_completed(), (tmp_path / "worker.log").read_text()[-5000:]
            arts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["distill-comparison"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[first.id])))
            assert len(arts) == 1 and "distilled student" in str(arts[0].data)
            report_art = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["distill-report"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[first.id])))[0]
            _check_rendered_in_ui(f"http://127.0.0.1:{port}", arts[0].id, report_art.id, tmp_path)
            assert (rd / "report.json").exists()
            page = client.read_artifacts(  # report.html as a link to the file on the worker's machine
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["distill-report-html"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[first.id])))
            assert len(page) == 1 and (rd / "report.html").resolve().as_uri() in str(page[0].data)
            sent_after_first = read_json(rd / "stats" / "generate.json")["totals"]["requests_sent"]

            second = _wait_final(client, client.create_flow_run_from_deployment(dep.id).id)
            assert second.state.is_completed()
            states = _task_states(client, second.id, expected=6)
            assert states == {s: "Cached" for s in ("adapt", "generate", "filter", "train", "evaluate", "report")}, states
    finally:
        if worker is not None:
            _stop(worker)
    stats = read_json(rd / "stats" / "generate.json")
    assert len(stats["invocations"]) == 1 and stats["totals"]["requests_sent"] == sent_after_first
    keys = [r["key"] for r in read_jsonl(rd / "data" / "requests.jsonl") if r.get("error") is None]
    assert len(keys) == len(set(keys))


def test_kubernetes_gpu_deployment_example_is_accepted_by_a_real_server(prefect_server, tmp_path):
    """The GPU job template and the weekly-gpu-k8s deployment of prefect.yaml, as a user would create them."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _, api, env = prefect_server
    env = {**env, "DISTILL_IMAGE": "registry.example.com/distill:test"}
    for cmd in (["work-pool", "create", "distill-k8s", "--type", "kubernetes",
                 "--base-job-template", "deploy/k8s/gpu-job-template.json"],
                ["--no-prompt", "deploy", "--name", "weekly-gpu-k8s"]):
        r = subprocess.run([PREFECT, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        pool = client.read_work_pool("distill-k8s")
        dep = client.read_deployment_by_name("distill/weekly-gpu-k8s")
    container = pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert dep.job_variables["image"] == "registry.example.com/distill:test"
    assert dep.job_variables["gpu_count"] == 1 and dep.parameters["config_path"] == "configs/gpu.yaml"
    assert dep.schedules and not dep.schedules[0].active


def test_a_key_given_with_set_to_deploy_or_serve_stays_out_of_every_prefect_record(prefect_server, tmp_path):
    """Breaks caught: the raw --set list stored as deployment parameters (the key in Prefect's database and
    UI); a key given to serve-flow with --set handed to its flow runs through os.environ."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _, api, env = prefect_server
    sentinel = "sk-SENTINEL-d3p10y"
    key = ["--set", f"teacher.api_key={sentinel}", "--set", "generation.input_requests=2"]
    r = subprocess.run(distill_cmd("deploy", "--name", "keyed", "--pool", "key-pool", *key),
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "reads it from $OPENAI_API_KEY" in " ".join(r.stderr.split()), r.stderr[-2000:]
    # serve-flow runs the flow in processes it starts: the key must already be in their environment, so a
    # key given with --set is refused (one line, nothing served) rather than handed over through os.environ
    r = subprocess.run(distill_cmd("serve-flow", "--name", "keyed-serve", *key), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "export OPENAI_API_KEY before `distill serve-flow`" in " ".join(r.stderr.split())
    assert sentinel not in r.stdout + r.stderr
    served = _start(distill_cmd("serve-flow", "--name", "keyed-serve", *key[2:]), {**env, "OPENAI_API_KEY": sentinel},
                    tmp_path / "serve.log")
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 180
            while True:
                deps = {d.name: d for d in client.read_deployments()}
                if "keyed-serve" in deps:
                    break
                assert served.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
    finally:
        _stop(served)
    for name in ("keyed", "keyed-serve"):
        assert deps[name].parameters["overrides"] == ["generation.input_requests=2"], deps[name].parameters
        assert sentinel not in deps[name].model_dump_json()
    db = [p for p in Path(env["PREFECT_HOME"]).rglob("*.db*") if p.is_file()]
    assert db, "the server's database was not where the test looks"
    for p in db:
        assert sentinel.encode() not in p.read_bytes(), p
