"""The run directory: every artefact a run writes has one property here, and no other module spells a
path inside a run directory (a test checks). Data flows forward through it: each stage reads only
what earlier stages wrote.

    runs/<id>/
      config.yaml             resolved config, secrets removed
      data/requests*.jsonl    the teacher request store (one file per writer)
      data/batches*.jsonl     the Batch API journal (one file per writer)
      data/generated.jsonl    candidate rows        data/train.jsonl   rows every filter kept
      data/dropped.jsonl      the drop ledger       dataset/           the kept set (parquet + card)
      teacher/                the LoRA-adapted teacher (adapter/, merged/, checkpoints/)
      stats/<stage>.json      counts, tokens, cost, wall time
      checkpoints/[<name>/]   training checkpoints
      student/ | students/<name>/   the distilled student(s)
      eval/<eval-file>/       predictions per model + summary.json
      report.json  report.md  frontier.png
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

RUNS = Path("runs")


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def new(cls, base: Path = RUNS) -> "RunDir":
        """A new runs/<timestamp>[-i] (not created yet)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d, i = Path(base) / stamp, 1
        while d.exists():
            d, i = Path(base) / f"{stamp}-{i}", i + 1
        return cls(d)

    @classmethod
    def named(cls, name: str, base: Path = RUNS) -> "RunDir":
        """A fixed runs/<name> (deployments reuse one run directory across scheduled runs)."""
        return cls(Path(base) / name)

    @classmethod
    def newest(cls, base: Path = RUNS) -> "RunDir | None":
        runs = sorted((p for p in Path(base).glob("*") if (p / "config.yaml").exists()), key=lambda p: p.stat().st_mtime)
        return cls(runs[-1]) if runs else None

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # --- the run's definition -----------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def teacher_server_log(self) -> Path:
        return self.logs / "teacher_server.log"

    @property
    def prefect_home(self) -> Path:
        return self.root / ".prefect"

    @property
    def prefect_results(self) -> Path:
        return self.root / ".prefect-results"

    # --- data ----------------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    def requests(self, writer: str | None = None) -> Path:
        """The request store's file for `writer` (None = the main one); a store reads every writer's file."""
        return self.data / (f"requests.{writer}.jsonl" if writer else "requests.jsonl")

    def batches(self, writer: str | None = None) -> Path:
        """The Batch API journal beside the store of the same writer."""
        return self.data / (f"batches.{writer}.jsonl" if writer else "batches.jsonl")

    @property
    def generated(self) -> Path:
        return self.data / "generated.jsonl"

    @property
    def train(self) -> Path:
        return self.data / "train.jsonl"

    @property
    def dropped(self) -> Path:
        return self.data / "dropped.jsonl"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @staticmethod
    def dataset_files(folder: Path) -> tuple[Path, Path]:
        """(parquet, dataset card) inside a dataset folder, in the Hub's layout."""
        return folder / "data" / "train-00000-of-00001.parquet", folder / "README.md"

    def stats(self, stage: str) -> Path:
        return self.root / "stats" / f"{stage}.json"

    # --- models --------------------------------------------------------------------------------------
    @property
    def teacher(self) -> Path:
        """The LoRA-adapted teacher: adapter/ (for vLLM), merged/ (for transformers), checkpoints/."""
        return self.root / "teacher"

    @property
    def teacher_adapter(self) -> Path:
        return self.teacher / "adapter"

    @property
    def teacher_merged(self) -> Path:
        return self.teacher / "merged"

    @property
    def teacher_checkpoints(self) -> Path:
        return self.teacher / "checkpoints"

    def student(self, name: str | None = None) -> Path:
        """The distilled student: student/, or students/<name>/ for a candidate of a ladder."""
        return self.root / "student" if name is None else self.root / "students" / name

    def student_stats(self, name: str | None = None) -> Path:
        return self.student(name) / "train_stats.json"

    def checkpoints(self, name: str | None = None) -> Path:
        return self.root / "checkpoints" if name is None else self.root / "checkpoints" / name

    # --- evaluation and report -----------------------------------------------------------------------
    def eval(self, eval_path: str | Path) -> Path:
        """Results per eval file, so evaluating another file never overwrites the main one."""
        return self.root / "eval" / Path(eval_path).stem

    def eval_summary(self, eval_path: str | Path) -> Path:
        return self.eval(eval_path) / "summary.json"

    def predictions(self, eval_path: str | Path, model_key: str) -> Path:
        return self.eval(eval_path) / f"{model_key}.jsonl"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def frontier_png(self) -> Path:
        return self.root / "frontier.png"
