"""The run directory: every artefact a run writes has one property here, and no other module spells a
path inside a run directory (a test checks). Data flows forward through it: each stage reads only
what earlier stages wrote. Who may write to it at a time is `distill.runlock`.

    runs/<id>/
      config.yaml             resolved config, secrets removed
      .lock                   held by the process writing to the run (its pid inside)
      data/requests*.jsonl    the teacher request store (one file per writer)
      data/batches*.jsonl     the Batch API journal (one file per writer)
      data/sending*.jsonl     budgeted requests, each written before it is sent (one file per writer)
      data/*.damaged          lines `distill doctor --fix` set aside
      data/generated.jsonl    candidate rows        data/train.jsonl   rows every filter kept
      data/dropped.jsonl      the drop ledger       dataset/           the kept set (parquet + card)
      teacher/                the LoRA-adapted teacher (adapter/, merged/, checkpoints/)
      stats/<stage>.json      counts, tokens, cost, wall time
      checkpoints/[<name>/]   training checkpoints
      rounds/<n>/             a later generation round's probing student (student/, checkpoints/, probes.jsonl)
      student/ | students/<name>/   the distilled student(s)
      adapter/ | adapters/<name>/   a LoRA student's adapter before it was merged (what model merging combines)
      eval/<eval-file>/       predictions per model + summary.json (+ pairwise-judge.jsonl: eval.judge's verdicts)
      served/[<name>/]        a student's GGUF as evaluated, when not of the export's type (else the export's)
      report.json  report.md  report.html (one self-contained page)  frontier.png  progression.png
      export/[<name>/]        hf/ + model card, <name>.<type>.gguf, Modelfile
      .<name>.<random>.tmp    what an atomic write is writing; one a killed writer left is removed when
                              the next writer takes the lock
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from distill.runlock import RunDirError, RunDirInUse, hold

__all__ = ["RUNS", "MultiRunDir", "RunDir", "RunDirError", "RunDirInUse", "check_name"]

RUNS = Path("runs")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str, what: str = "name") -> str:
    """A name that becomes one path component (a ladder student, a deployment's run directory): letters,
    digits, '.', '_' and '-', starting with a letter or digit, so it can never be '..' or hold a '/'."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a safe name: use letters, digits, '.', '_' and '-' "
                         "(starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def new(cls, base: Path = RUNS) -> "RunDir":
        """A new runs/<timestamp>[-i], created here: mkdir either makes it or fails, so two runs started
        in the same second never share one. (Made only once the inputs have been checked.)"""
        Path(base).mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d, i = Path(base) / stamp, 1
        while True:
            try:
                d.mkdir()
                return cls(d)
            except FileExistsError:
                d, i = Path(base) / f"{stamp}-{i}", i + 1

    @classmethod
    def named(cls, name: str, base: Path = RUNS) -> "RunDir":
        """A fixed runs/<name> (deployments reuse one run directory across scheduled runs)."""
        return cls(Path(base) / check_name(name, "deployment name"))

    @classmethod
    def newest(cls, base: Path = RUNS) -> "RunDir | None":
        runs = sorted((p for p in Path(base).glob("*") if (p / "config.yaml").exists()), key=lambda p: p.stat().st_mtime)
        return cls(runs[-1]) if runs else None

    def __str__(self) -> str:
        return str(self.root)

    def make(self) -> None:
        """Create the run directory, or say in one line why it cannot be one."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise PermissionError(f"[Errno 13] not writable: '{self.root}'")
        except FileExistsError:
            raise RunDirError(f"{self.root}: is a file, not a run directory") from None
        except OSError as e:
            raise RunDirError(f"{self.root}: cannot be a run directory ({e.strerror or e})") from None

    def lock(self):
        """Hold the run directory for writing: one writer process at a time (`distill.runlock.hold`)."""
        return hold(self)

    def __fspath__(self) -> str:
        return str(self.root)

    # --- the run's definition -----------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

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

    def generation_requests(self) -> list[Path]:
        """The request store's files of generation's writers (the filters' judge and the evaluation's have their own)."""
        return sorted(p for p in self.data.glob("requests*.jsonl") if p not in (self.requests("filters"), self.requests("judge")))

    def append_logs(self) -> list[Path]:
        """Every append-only log of the run: the request store, the Batch API journal, the sending log."""
        return sorted(p for pat in ("requests*.jsonl", "batches*.jsonl", "sending*.jsonl") for p in self.data.glob(pat))

    def whole_outputs(self) -> list[Path]:
        """Files a stage writes whole (and atomically): its rows, its stats, the eval summaries and the report."""
        rows = [p for p in (self.generated, self.train, self.dropped, self.report_json) if p.exists()]
        return rows + sorted((self.root / "stats").glob("*.json")) + sorted((self.root / "eval").glob("*/summary.json"))

    def sending(self, writer: str | None = None) -> Path:
        """Budgeted requests about to be sent, one line each, written before they go (what a budget counts)."""
        return self.data / (f"sending.{writer}.jsonl" if writer else "sending.jsonl")

    def sending_files(self) -> list[Path]:
        return sorted(self.data.glob("sending*.jsonl"))

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

    def adapter(self, name: str | None = None) -> Path:
        """A LoRA student's trained adapter, kept beside the merged student for model merging."""
        return self.root / "adapter" if name is None else self.root / "adapters" / name

    def student_stats(self, name: str | None = None) -> Path:
        return self.student_stats_in(self.student(name))

    @staticmethod
    def student_stats_in(folder: Path) -> Path:
        """A trained student's own stats, inside its folder."""
        return folder / "train_stats.json"

    def round_dir(self, round_no: int) -> Path:
        """What generation round round_no (2 and up) trained to find the student's misses."""
        return self.root / "rounds" / str(round_no)

    def round_student(self, round_no: int) -> Path:
        return self.round_dir(round_no) / "student"

    def round_checkpoints(self, round_no: int) -> Path:
        return self.round_dir(round_no) / "checkpoints"

    def round_probes(self, round_no: int) -> Path:
        """The probe rows with the teacher's, the known and the probing student's answers."""
        return self.round_dir(round_no) / "probes.jsonl"

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

    def judgements(self, eval_path: str | Path) -> Path:
        """The pairwise judge's verdicts on one eval set: per model and row, both orders and the outcome."""
        return self.eval(eval_path) / "pairwise-judge.jsonl"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def frontier_png(self) -> Path:
        return self.root / "frontier.png"

    @property
    def progression_png(self) -> Path:
        return self.root / "progression.png"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def export(self, name: str | None = None) -> Path:
        return self.root / "export" if name is None else self.root / "export" / name

    def served(self, name: str | None = None) -> Path:
        return self.root / "served" / (name or "")


@dataclass(frozen=True)
class MultiRunDir:
    """A multi-task run (`distill multitask`): a run directory per task, and the students made across them.

        runs/<id>/
          multitask.yaml          the multi-task config as given, and config.yaml in each task's folder
          tasks/<task>/           each task's own run directory (its separate student, its evaluation of all)
          students/<name>/        a merged (merged-<method>) or the joint student
          adapters/<name>/        a merged student's adapter before it was merged into the base
          checkpoints/joint/      the joint student's training checkpoints
          stats/<name>.json       how each merged or joint student was made
          export/<name>.<type>.gguf   each merged or joint student as one GGUF
          report.json  report.md  the tasks side by side: every way's quality and what serving it costs
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def __str__(self) -> str:
        return str(self.root)

    def lock(self):
        return hold(RunDir(self.root))

    @property
    def config(self) -> Path:
        return self.root / "multitask.yaml"

    def task(self, name: str) -> RunDir:
        return RunDir(self.root / "tasks" / check_name(name, "task name"))

    def student(self, name: str) -> Path:
        return self.root / "students" / name

    def adapter(self, name: str) -> Path:
        return self.root / "adapters" / name

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def stats(self, name: str) -> Path:
        return self.root / "stats" / f"{name}.json"

    def gguf(self, name: str, quant: str) -> Path:
        return self.root / "export" / f"{name}.{quant}.gguf"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"
