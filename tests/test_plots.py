"""The figures (icl_ft.evaluation.plots): one grid layout, report's condition colours, bounded sizes, no
overlapping labels; the committed study's table and figure rebuilt from its summary."""

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from icl_ft.evaluation import plots
from icl_ft.evaluation import report

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "docs" / "results" / "full"
CONDITIONS = ("pretrained", "icl", "ft", "ft_split", "ft_aug_local", "ft_aug_global", "ft_aug_all")


def _rows(panels: int, conditions=CONDITIONS):
  return [{"dataset": f"dataset_{p // 2}", "split": f"split_{p % 2}", "condition": c,
           "accuracy": 0.1 + 0.1 * i, "se": 0.05, "n": 20, "chance": 0.25}
          for p in range(panels) for i, c in enumerate(conditions)]


def _pixels(path: Path, color: str) -> int:
  """How many pixels of the PNG have exactly `color` ("#RRGGBB")."""
  pixels = (image.imread(path)[..., :3] * 255).round().astype(np.int64)
  rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
  return int((pixels == rgb).all(axis=-1).sum())


def _size(path: Path) -> tuple[int, int]:
  h, w = image.imread(path).shape[:2]
  return w, h


@pytest.mark.parametrize("panels,shape", [(1, (1, 1)), (3, (1, 3)), (4, (1, 4)), (5, (2, 3)),
                                          (6, (2, 3)), (7, (2, 4)), (8, (2, 4)), (9, (3, 3)),
                                          (12, (3, 4))])
def test_grid_is_at_most_four_wide_with_fewest_empty_slots(panels, shape):
  assert plots.grid_shape(panels) == shape


@pytest.mark.parametrize("panels", [1, 5, 8])
def test_accuracy_figure_uses_the_condition_colours_at_a_sane_size(tmp_path, panels):
  path = plots.accuracy_figure(_rows(panels), tmp_path / "a.png", title=plots.study_title("x"))
  w, h = _size(path)
  assert w <= 2000 and h <= 1400 and 0.8 <= w / h <= 3.0, (w, h)
  for c in CONDITIONS:  # a filled bar (or legend patch) of each condition's one colour
    assert _pixels(path, report.CONDITION_COLORS[c]) > 500, c
  assert _pixels(path, report.CONDITION_COLORS["no_knowledge"]) < 100  # only stray text pixels
  assert "`" not in plots.study_title("x")


def test_accuracy_figure_refuses_no_rows(tmp_path):
  with pytest.raises(ValueError, match="no summary rows"):
    plots.accuracy_figure([], tmp_path / "none.png")
  assert not (tmp_path / "none.png").exists()


def _no_overlap(boxes) -> bool:
  boxes = sorted(boxes, key=lambda b: b.y0)
  return all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:]))


def test_subset_and_audit_figures_are_bounded_and_their_labels_do_not_overlap(tmp_path,
                                                                             monkeypatch):
  seen = []
  save = plots._save

  def checked(fig, path):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
      labels = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
      seen.append(_no_overlap(labels))
      titles = [ax.title.get_window_extent(renderer)]
      assert all(t.width > 0 for t in titles) or not ax.get_title()
    if fig._suptitle is not None:  # pylint: disable=protected-access
      box = fig._suptitle.get_window_extent(renderer)  # pylint: disable=protected-access
      seen.append(box.x0 >= 0 and box.x1 <= fig.bbox.width)  # not clipped at the sides
    return save(fig, path)

  monkeypatch.setattr(plots, "_save", checked)
  recs = [{"dataset": f"d{d}", "split": "s", "subset": f"sub{k}", "condition": c,
           "id": f"{k}_{i}", "choices": [{}, {}], "correct": [0], "is_correct": (i + k) % 3 == 0}
          for d in range(4) for c in CONDITIONS for k in range(12) for i in range(3)]
  w, h = _size(plots.subset_figure(recs, tmp_path / "subsets.png"))
  assert w <= 2000 and h <= 1400 and w / h >= 0.8, (w, h)  # not a 840x7956 column
  plots.subset_figure([r for r in recs if r["dataset"] == "d0"], tmp_path / "one.png")
  plots.accuracy_figure(_rows(1), tmp_path / "one.png", title=plots.study_title("x"))
  audits = [{"run": "r", "source": f"dataset_{d}", "strategy": s, "total": 10, "correct": 3,
             "counts": {"restatement": 2, "test:x": 1, "false": 3, "unparsed": 4}}
            for d in range(4) for s in ("local", "global", "all") for _ in range(3)]
  w, h = _size(plots.audit_figure(audits, tmp_path / "audit.png"))
  assert w <= 2000 and h <= 1400, (w, h)
  assert seen and all(seen)
  assert _pixels(tmp_path / "audit.png", plots.AUDIT_COLORS["test answer"]) > 300
  assert plots.audit_figure([], tmp_path / "none.png") is None


def test_committed_study_table_and_figure_are_rebuilt_from_its_summary(tmp_path):
  run = tmp_path / "full"
  shutil.copytree(FULL, run)
  table, figure = plots.rebuild_study_report(run)
  assert table.read_text() == (FULL / "table.md").read_text()  # the committed table is current
  w, h = _size(figure)
  assert w <= 2000 and h <= 1400 and 1.0 <= w / h <= 3.0
  text = table.read_text()
  # Binomial SEs: zero only where every evaluation agrees (accuracy 0 or 1).
  zero_se = re.findall(r"(\d\.\d+) ± 0\.000", text.split("Finetuning data")[0])
  assert set(zero_se) <= {"0.000", "1.000"}
  assert "the same documents" not in text and "| semantic_structure | all | 3 |" in text
  pivot = text.split("\n\n")[1]  # the accuracy table, as the README quotes it
  assert pivot.startswith("| dataset | split | pretrained | no_knowledge | icl |") and pivot in (
      ROOT / "README.md").read_text()
  per_seed = report.read_summary(run)
  for r in per_seed:  # summary.json's se is the binomial one
    assert r["se"] == pytest.approx(math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / r["n"]))


def test_summary_only_directories_load_as_pooled_rows_and_audits():
  rows = plots.load_rows([FULL])
  assert rows == report.order_rows(report.pool_seeds(report.read_summary(FULL)))
  assert [r["condition"] for r in rows if r["dataset"] == "syllogisms"] == [
      CONDITIONS[0], "no_knowledge", *CONDITIONS[1:]]
  assert all(r["se"] > 0 for r in rows if 0 < r["accuracy"] < 1)
  audits = plots.load_audits([FULL])
  assert {(a["source"], a["strategy"]) for a in audits} >= {("syllogisms", "all")}


def test_default_results_resolve_from_the_repository_root(tmp_path):
  repo = tmp_path / "repo"
  (repo / "notebooks").mkdir(parents=True)
  (repo / "notebooks" / "analysis.ipynb").write_text("{}")
  assert plots.repo_root(repo / "notebooks") == repo == plots.repo_root(repo)
  assert plots.default_results(repo / "notebooks") == repo / "docs" / "results" / "full"
  (repo / "results").mkdir()
  assert plots.default_results(repo / "notebooks") == repo / "results"
  assert plots.default_results(repo) == repo / "results"
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  assert plots.repo_root(outside) is None
  assert plots.default_results(outside) == outside / "results"
  assert plots.repo_root(ROOT / "notebooks") == ROOT
