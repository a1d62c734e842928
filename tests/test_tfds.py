"""TFDS array_record builders, read back through tfds.data_source and grain (no TensorFlow needed)."""

import json
import subprocess
import sys

import pytest

tfds = pytest.importorskip("tensorflow_datasets")
grain = pytest.importorskip("grain")

from icl_ft.datasets import records, registry, tfds_builders  # noqa: E402

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = tfds_builders.build("celebrities", scale="small", data_dir=data_dir)
  return data_dir, builder


def test_data_source_matches_generated_records(built):
  data_dir, _ = built
  expected = registry.generate("celebrities", scale="small")
  sources = tfds.data_source("icl_ft/celebrities_small", data_dir=str(data_dir))
  assert set(sources) == {"train", "test_reversal", "test_forward"}
  train = sources["train"]
  assert len(train) == len(expected.train) == 150
  assert [tfds_builders.to_document(train[i]) for i in range(len(train))] == list(expected.train)
  for split, questions in expected.tests.items():
    source = sources[f"test_{split}"]
    assert [tfds_builders.to_question(source[i]) for i in range(len(source))] == list(questions)
  raw = sources["test_reversal"][0]
  assert isinstance(raw["prompt"], bytes) and all(type(i).__name__ == "int32" for i in raw["correct"])


def test_files_are_array_record_with_card(built):
  _, builder = built
  files = sorted(p.name for p in builder.data_path.iterdir())
  assert "icl_ft-train.array_record-00000-of-00001" in files
  assert builder.info.metadata["card"]["counts"]["train_documents"] == 150
  assert tfds_builders.read(builder) == records.Dataset(
      name="celebrities", train=registry.generate("celebrities", "small").train,
      tests=registry.generate("celebrities", "small").tests, card=builder.info.metadata["card"])


def test_grain_map_dataset_reads_the_source(built):
  data_dir, _ = built
  source = tfds.data_source("icl_ft/celebrities_small", data_dir=str(data_dir))["test_reversal"]
  ds = grain.MapDataset.source(source)
  assert len(ds) == 20
  question = tfds_builders.to_question(ds[3])
  assert question == registry.generate("celebrities", "small").tests["reversal"][3]
  prompts = list(ds.map(lambda ex: ex["prompt"].decode()))
  assert len(prompts) == 20 and all(p.startswith(("Famous", "The one")) for p in prompts)


def test_custom_config_and_directory_source(tmp_path):
  builder = tfds_builders.build("celebrities", scale="small", seed=4, data_dir=tmp_path, num_both_people=0)
  assert builder.builder_config.name.startswith("celebrities_small_seed4_custom")
  assert tfds_builders.read(builder).train == registry.generate("celebrities", "small", seed=4,
                                                                 num_both_people=0).train
  # a dataset directory written by icl-ft-data / records.write_dataset
  ds = registry.generate("celebrities", "small", seed=1)
  records.write_dataset(ds, tmp_path / "jsonl" / "celebrities")
  from_dir = tfds_builders.build_from_directory(tmp_path / "jsonl" / "celebrities", data_dir=tmp_path)
  back = tfds.builder_from_directory(str(from_dir.data_path)).as_data_source()
  assert [tfds_builders.to_question(back["test_forward"][i]) for i in range(20)] == list(ds.tests["forward"])


def test_document_metadata_survives(built):
  _, builder = built
  doc = tfds_builders.to_document(builder.as_data_source()["train"][0])
  assert set(doc.metadata) == {"group", "direction", "template", "completion_start"}
  assert json.loads(json.dumps(doc.metadata)) == doc.metadata


def test_predefined_configs_cover_every_dataset_and_scale():
  names = {c.name for c in tfds_builders.IclFt.BUILDER_CONFIGS}
  assert names == {f"{n}_{s}" for n in registry.NAMES for s in ("paper", "small")}


def test_builders_need_neither_tensorflow_nor_jax(tmp_path):
  code = ("import sys; from icl_ft.datasets import tfds_builders as t; import tensorflow_datasets as tfds; "
          f"b = t.build('celebrities', 'small', data_dir={str(tmp_path)!r}); "
          f"s = tfds.data_source('icl_ft/celebrities_small', data_dir={str(tmp_path)!r}); "
          "assert len(s['train']) == 150; "
          "print(sorted(m for m in ('tensorflow', 'jax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", registry.NAMES)
def test_every_dataset_builds_at_small_scale(tmp_path, name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec(f"icl_ft.datasets.{name}") is None:
    pytest.skip(f"{name}.py not written yet")
  expected = registry.generate(name, "small")
  back = tfds_builders.read(tfds_builders.build(name, "small", data_dir=tmp_path))
  assert back.train == expected.train and back.tests == expected.tests
