"""notebooks/analysis.ipynb runs headless (nbclient) with its defaults from the repository root
and from notebooks/, on results the test writes, and draws readable figures.

The results are synthetic but written by the project's own code paths: questions from
`records.Question`, per-question records from `scoring.QuestionScore.to_json()` in the layout
of `icl_ft.evaluation.evaluate` (an eval run: questions.jsonl + summary.json from `report.summarize`;
a study run: eval/<dataset>/<condition>/questions.jsonl), and an augmented dataset written
by `records.write_dataset` with its card's audit from `icl_ft.augment.audit.summarize`.
The results sit in a stand-in repository (its own notebooks/analysis.ipynb, results/), so the
notebook's defaults resolve there.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from icl_ft.augment import audit as audit_lib
from icl_ft.datasets import records
from icl_ft.evaluation import plots
from icl_ft.evaluation import report
from icl_ft.inference import scoring

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def _records(dataset: str, split: str, condition: str, accuracy: float, n: int, seed: int):
  rng = random.Random(seed)
  out = []
  for i in range(n):
    q = records.Question(id=f"{split}_{i:04d}", split=split, subset=f"subset_{i % 3}",
                         prompt="Gruds are", choices=(" a.", " b.", " c.", " d."), correct=(0,),
                         fact_ids=("f",))
    right = rng.random() < accuracy
    logprobs = [-1.0 if (j == 0) == right else -2.0 - j for j in range(4)]
    choices = tuple(scoring.ChoiceScore(lp, 1, lp) for lp in logprobs)
    s = scoring.QuestionScore(q, choices, "sum", scoring.predict(choices, "sum"))
    out.append({"dataset": dataset, "split": split, "subset": q.subset, "condition": condition,
                "id": q.id, **s.to_json()})
  return out


def _write_run(run_dir: Path, recs) -> None:
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
  (run_dir / "summary.json").write_text(json.dumps(report.summarize(recs), indent=2))


@pytest.fixture
def results(tmp_path):
  # An icl-ft-eval run per condition (as configs/gemma.py's eval runs) ...
  for condition, acc in (("pretrained", 0.3), ("icl", 0.9)):
    recs = (_records("semantic_structure", "reversal", condition, acc, 30, 1)
            + _records("semantic_structure", "syllogism", condition, acc, 30, 2))
    _write_run(tmp_path / "results" / f"gemma2_2b-{condition}", recs)
  # ... and a study run with a finetuned condition and an augmented dataset.
  study = tmp_path / "results" / "study"
  _write_run(study / "eval" / "semantic_structure" / "ft_s0",
             _records("semantic_structure", "reversal", "ft", 0.25, 30, 3))
  labels = ["restatement"] * 5 + ["inference"] * 3 + ["false"] * 2 + ["test:reversal"]
  card = {"name": "semantic_structure", "seed": 0, "scale": "small",
          "augmentation": {"strategy": "local", "source_name": "semantic_structure",
                           "audit": audit_lib.summarize(labels)}}
  doc = records.Document(id="d0", text="Gruds are abmes.", sentences=("Gruds are abmes.",),
                         fact_ids=("f",))
  records.write_dataset(records.Dataset(name="semantic_structure", train=(doc,), tests={},
                                        card=card),
                        study / "data" / "semantic_structure_aug_local_s0")
  return tmp_path / "results"


def test_plots_helpers(results):
  dirs = sorted(str(p) for p in results.iterdir())
  recs = plots.load_records(",".join(dirs))
  assert len(recs) == 2 * 60 + 30
  rows = plots.summary_rows(recs)
  assert [(r["split"], r["condition"]) for r in rows][:3] == [
      ("reversal", "pretrained"), ("reversal", "icl"), ("reversal", "ft")]
  assert plots.load_rows(dirs) == rows  # every directory has its records
  assert all(r["se"] > 0 for r in rows if 0 < r["accuracy"] < 1)
  assert {r["subset"] for r in plots.subset_rows(recs)} == {"subset_0", "subset_1", "subset_2"}
  audits = plots.load_audits(dirs)
  assert len(audits) == 1 and audits[0]["precision"] == pytest.approx(9 / 11)
  # 11 statements: 9 true (5 restatements, 3 inferences, 1 test answer) and 2 false.
  assert "| semantic_structure | local | 1 | 11 | 11 | 9 |" in report.usability_table(audits)
  assert plots.audit_figure([], results / "none.png") is None  # no augmentation: no figure
  with pytest.raises(FileNotFoundError, match="results directory not found"):
    plots.parse_dirs(str(results / "missing"))


def _png_size(path: Path) -> tuple[int, int]:
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n", path
  return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("where", [".", "notebooks"])
def test_notebook_runs_headless_with_its_defaults(results, tmp_path, monkeypatch, where):
  # tmp_path is a stand-in repository: notebooks/analysis.ipynb and results/ (the fixture's).
  (tmp_path / "notebooks").mkdir()
  shutil.copy(NOTEBOOK, tmp_path / "notebooks" / "analysis.ipynb")
  for name in ("ICL_FT_RESULTS", "ICL_FT_FIGURES", "ICL_FT_LABEL_RUNS"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(  # the kernel imports this checkout
      [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
  nb = nbformat.read(tmp_path / "notebooks" / "analysis.ipynb", as_version=4)
  assert "google.colab" in nb.cells[1].source and "pip" in nb.cells[1].source
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path / where)}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  figures = tmp_path / "figures"  # <repository>/figures, wherever the notebook ran
  for name in ("accuracy.png", "subsets.png", "audit.png"):
    w, h = _png_size(figures / name)
    assert 600 <= w <= 2000 and 300 <= h <= 1400, (name, w, h)  # readable, not a strip
  text = json.dumps([o.get("data", {}).get("text/markdown", "") for o in outputs])
  assert "binomial standard error" in text and "precision" not in text
  assert "| pretrained | icl | ft | chance |" in text  # the one condition order
  assert "| semantic_structure | local | 1 | 11 | 11 | 9 |" in text  # augmentation usability
  assert os.path.basename(sys.executable)  # the kernel is this environment's python
