"""The data half of the distillation path as a Prefect flow on the ephemeral API (no server)."""
import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow


def test_flow_runs_generate_and_filter_and_publishes_the_data_artifact(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    from distill.flow import distill_flow
    from distill.io import read_json

    rd = tmp_path / "run"
    state = distill_flow(run_dir=str(rd), overrides=TINY, stages=["generate", "filter"], return_state=True)
    assert state.is_completed(), state
    assert (rd / "data" / "train.jsonl").exists() and not (rd / "student").exists()
    stats = read_json(rd / "stats" / "filter.json")

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state.is_completed()
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["distill-data"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert len(arts) == 1 and arts[0].type == "table"
    table = arts[0].data if isinstance(arts[0].data, list) else __import__("json").loads(arts[0].data)
    assert [r["stage"] for r in table] == [s["stage"] for s in stats["stages"]]


def test_a_second_flow_run_with_the_same_parameters_reuses_every_stage(tmp_path):
    """Breaks caught: Prefect's default cache policy (no reuse across flow runs: every stage runs again),
    and a re-run that sends a request again (the request store would grow)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from distill.flow import distill_flow
    from distill.io import read_json

    rd = tmp_path / "run"
    params = dict(run_dir=str(rd), overrides=TINY, stages=["generate", "filter"])
    assert distill_flow(**params, return_state=True).is_completed()
    sent = read_json(rd / "stats" / "generate.json")["totals"]["requests_sent"]
    store = (rd / "data" / "requests.jsonl").read_bytes()  # every request sent leaves a line here
    second = distill_flow(**params, return_state=True)
    assert second.is_completed()
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[second.state_details.flow_run_id])))
    assert sorted(t.state.name for t in tasks) == ["Cached", "Cached", "Cached"]  # adapt, generate, filter
    stats = read_json(rd / "stats" / "generate.json")
    assert len(stats["invocations"]) == 1 and stats["totals"]["requests_sent"] == sent
    assert (rd / "data" / "requests.jsonl").read_bytes() == store, "the second run sent requests again"

    # another seed file is another config: refused on this run directory, then redone with force, whose
    # generation starts a fresh history while the request store spares every request already answered
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text((ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl").read_text())
    other = {**params, "overrides": TINY + [f"seeds_path={seeds}"]}
    assert distill_flow(**other, return_state=True).is_failed()
    assert distill_flow(**other, force=True, return_state=True).is_completed()
    stats = read_json(rd / "stats" / "generate.json")
    assert len(stats["invocations"]) == 1 and stats["last"]["requests_sent"] == 0 and stats["last"]["cache_hits"] > 0
    assert (rd / "data" / "requests.jsonl").read_bytes() == store
