"""Generation fanned out through prefect-dask's DaskTaskRunner (a real LocalCluster of worker
processes) keeps exactly the rows the default in-process runner keeps."""
import difflib
import os
import threading

import pytest

from distill.testing.fake_openai import FakeOpenAI, plausible_reply

pytestmark = pytest.mark.slow


class CorrectingTeacher:
    """Writes sentences like plausible_reply and corrects an input back to the nearest sentence it wrote.

    A teacher whose answers depend only on the request, as a greedy real one's do, so two runs may be
    compared row for row; the fake server adds transient faults so the shards also retry.
    """

    def __init__(self):
        self.written: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        text = plausible_reply(body)
        if "\n" in text:
            with self.lock:
                self.written += [line.split(". ", 1)[1] for line in text.splitlines()]
            return text
        with self.lock:
            near = difflib.get_close_matches(text, self.written, n=1, cutoff=0.6)
        return near[0] if near else text


def _run(tmp_path, name, *extra):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from distill.flow import distill_flow
    from distill.io import read_jsonl

    rd = tmp_path / name
    with FakeOpenAI(reply=CorrectingTeacher(), fault_rate=0.15, faults=["429", "500", "reset"], seed=11) as fake:
        state = distill_flow(run_dir=str(rd), stages=["generate", "filter"], return_state=True, overrides=[
            "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
            "teacher.endpoint.backoff_base_s=0.01", "teacher.endpoint.max_retries=20", "teacher.endpoint.max_concurrency=2",
            "generation.input_requests=12", "generation.inputs_per_request=4", *extra])
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return rd, read_jsonl(rd / "data" / "train.jsonl"), sorted(t.name.rsplit("-", 1)[0] for t in runs)


def test_dask_fan_out_keeps_the_same_rows_as_the_default_runner(tmp_path):
    rd_seq, kept_seq, tasks_seq = _run(tmp_path, "default")
    rd_dask, kept_dask, tasks_dask = _run(tmp_path, "dask", "generation.shards=3", "generation.task_runner=dask",
                                          "generation.dask_workers=2")
    assert tasks_seq == ["adapt", "filter", "generate"]
    assert tasks_dask == ["adapt", "filter", "generate"] + ["generate-answers-shard"] * 3 + ["generate-inputs-shard"] * 3

    teacher_rows = [r for r in kept_seq if r["meta"]["source"] == "teacher"]
    assert len(teacher_rows) >= 20  # the comparison is over real generated data, not seeds alone
    assert [(r["id"], r["input"], r["output"]) for r in kept_dask] == [(r["id"], r["input"], r["output"]) for r in kept_seq]

    # the shards ran in the cluster's worker processes, not in this one
    from distill.io import read_json, read_jsonl

    workers = read_json(rd_dask / "stats" / "generate.json")["counts"]["shard_workers"]
    assert workers and all(int(w.rsplit(":", 1)[1]) != os.getpid() for w in workers), workers
    # each shard kept its own request-store file; together they hold each request of the default run once
    shard_files = sorted(p.name for p in (rd_dask / "data").glob("requests.shard*.jsonl"))
    assert shard_files == ["requests.shard0.jsonl", "requests.shard1.jsonl", "requests.shard2.jsonl"]
    assert not (rd_dask / "data" / "requests.jsonl").exists()
    keys = [r["key"] for f in shard_files for r in read_jsonl(rd_dask / "data" / f) if r.get("error") is None]
    seq_keys = [r["key"] for r in read_jsonl(rd_seq / "data" / "requests.jsonl") if r.get("error") is None]
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(seq_keys)
