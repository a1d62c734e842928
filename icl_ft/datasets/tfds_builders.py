"""TFDS builders for the study's datasets, written as array_record (no TensorFlow needed).

One generic builder, `IclFt` (TFDS name `icl_ft`), parameterized by a
`DatasetConfig` (dataset name, scale, seed, Params overrides, or a dataset
directory written by `records.write_dataset`). Predefined configs:
`<dataset>_<scale>` at seed 0 for every registry dataset and scale (`paper`, `small`),
e.g. `icl_ft/celebrities_small`.

Splits: `train` holds the documents, `test_<split>` the questions of each test
split. TFDS has one feature schema per dataset, so both kinds share a flat
schema; fields of the other kind are empty:

  id, text, sentences[], fact_ids[], metadata (JSON text)   -- documents
  id, split, subset, prompt, choices[], correct[] (int32), fact_ids[]  -- questions

Records keep their generation order (`disable_shuffling`). Reading:

  build("celebrities", scale="small", data_dir=d)          # prepare once
  source = tfds.data_source("icl_ft/celebrities_small", data_dir=d)["test_reversal"]
  ds = grain.MapDataset.source(source)                       # random access for grain
  question = to_question(ds[0])

`tfds.data_source` reads array_record files with no TensorFlow installed; text
comes back as bytes, sequences as lists (`to_document` / `to_question` decode).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from icl_ft.datasets import records
from icl_ft.datasets import registry

BUILDER_NAME = "icl_ft"
TRAIN_SPLIT = "train"
SCALES = ("paper", "small")


@dataclasses.dataclass(eq=False)
class DatasetConfig(tfds.core.BuilderConfig):
  """Which dataset to build: generated (`dataset`, `scale`, `seed`, `overrides`) or read from `source_dir`."""

  dataset: str = ""
  scale: str = "paper"
  seed: int = 0
  overrides: tuple[tuple[str, Any], ...] = ()
  source_dir: str = ""


def config_name(dataset: str, scale: str = "paper", seed: int = 0, overrides: Mapping[str, Any] | None = None) -> str:
  """`<dataset>_<scale>`, plus `_seed<N>` and a hash of the overrides when they are set."""
  name = f"{dataset}_{scale}"
  if seed:
    name += f"_seed{seed}"
  if overrides:
    digest = hashlib.sha1(json.dumps(sorted(overrides.items()), default=str).encode()).hexdigest()[:10]
    name += f"_custom{digest}"
  return name


def make_config(dataset: str, scale: str = "paper", seed: int = 0, **overrides: Any) -> DatasetConfig:
  """A config generating `dataset` at `scale` with `seed` and Params overrides."""
  return DatasetConfig(name=config_name(dataset, scale, seed, overrides), version="1.0.0", dataset=dataset,
                       scale=scale, seed=seed, overrides=tuple(sorted(overrides.items())),
                       description=f"{dataset} at scale {scale}, seed {seed}, overrides {dict(overrides)}")


def features() -> tfds.features.FeaturesDict:
  """The flat schema shared by documents (train) and questions (test_<split>)."""
  text = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "id": text,
      "text": text,
      "sentences": tfds.features.Sequence(text),
      "fact_ids": tfds.features.Sequence(text),
      "metadata": text,
      "split": text,
      "subset": text,
      "prompt": text,
      "choices": tfds.features.Sequence(text),
      "correct": tfds.features.Sequence(np.int32),
  })


def _empty() -> dict[str, Any]:
  return {"id": "", "text": "", "sentences": [], "fact_ids": [], "metadata": "", "split": "", "subset": "",
          "prompt": "", "choices": [], "correct": []}


def document_example(doc: records.Document) -> dict[str, Any]:
  """A Document as a feature dict."""
  example = _empty()
  example.update(id=doc.id, text=doc.text, sentences=list(doc.sentences), fact_ids=list(doc.fact_ids),
                 metadata=json.dumps(dict(doc.metadata), sort_keys=True, ensure_ascii=False))
  return example


def question_example(q: records.Question) -> dict[str, Any]:
  """A Question as a feature dict."""
  example = _empty()
  example.update(id=q.id, split=q.split, subset=q.subset, prompt=q.prompt, choices=list(q.choices),
                 correct=[int(i) for i in q.correct], fact_ids=list(q.fact_ids))
  return example


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _texts(values: Any) -> tuple[str, ...]:
  return tuple(_text(v) for v in values)


def to_document(example: Mapping[str, Any]) -> records.Document:
  """Decodes an element of the `train` split back into a Document."""
  metadata = _text(example["metadata"])
  return records.Document(id=_text(example["id"]), text=_text(example["text"]),
                          sentences=_texts(example["sentences"]), fact_ids=_texts(example["fact_ids"]),
                          metadata=json.loads(metadata) if metadata else {})


def to_question(example: Mapping[str, Any]) -> records.Question:
  """Decodes an element of a `test_<split>` split back into a Question."""
  return records.Question(id=_text(example["id"]), split=_text(example["split"]), subset=_text(example["subset"]),
                          prompt=_text(example["prompt"]), choices=_texts(example["choices"]),
                          correct=tuple(int(i) for i in example["correct"]), fact_ids=_texts(example["fact_ids"]))


class IclFt(tfds.core.GeneratorBasedBuilder):
  """The study's datasets (see the module docstring); `config` picks dataset, scale and seed."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Documents in `train`, questions in `test_<split>`."}
  BUILDER_CONFIGS = [make_config(name, scale) for name in registry.NAMES for scale in SCALES]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 derives this through `importlib_resources`, a package it needs but
    # only declares for Python < 3.9 (tensorflow/datasets#11212): answer directly.
    return epath.Path(__file__)

  def __init__(self, *args, **kwargs):
    self._dataset: records.Dataset | None = None
    super().__init__(*args, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=features(),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        homepage="https://arxiv.org/abs/2505.00661",
    )

  def source(self) -> records.Dataset:
    """The records this builder writes (generated or read once, then cached)."""
    if self._dataset is None:
      config: DatasetConfig = self.builder_config
      if config.source_dir:
        self._dataset = records.read_dataset(config.source_dir)
      else:
        self._dataset = registry.generate(config.dataset, scale=config.scale, seed=config.seed,
                                          **dict(config.overrides))
    return self._dataset

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Any]]:
    del dl_manager  # nothing to download
    dataset = self.source()
    self.info.metadata["card"] = json.loads(json.dumps(dataset.card_with_counts(), default=str))
    splits = {TRAIN_SPLIT: self._generate_examples(documents=dataset.train)}
    for split, questions in sorted(dataset.tests.items()):
      splits[f"{records.TEST_PREFIX}{split}"] = self._generate_examples(questions=questions)
    return splits

  def _generate_examples(self, documents=(), questions=()) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in documents:
      yield doc.id, document_example(doc)
    for q in questions:
      yield q.id, question_example(q)


def build(dataset: str, scale: str = "paper", seed: int = 0, data_dir: str | os.PathLike[str] | None = None,
          **overrides: Any) -> IclFt:
  """Generates `dataset` and prepares it as array_record under `data_dir`; returns the builder."""
  config = make_config(dataset, scale, seed, **overrides)
  predefined = {c.name for c in IclFt.BUILDER_CONFIGS}
  builder = IclFt(config=config.name if config.name in predefined else config,
                  data_dir=None if data_dir is None else os.fspath(data_dir), file_format="array_record")
  builder.download_and_prepare()
  return builder


def build_from_directory(source_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
                         name: str | None = None) -> IclFt:
  """Prepares a dataset directory written by `records.write_dataset` (e.g. by icl-ft-data)."""
  source_dir = Path(source_dir)
  config = DatasetConfig(name=name or f"{source_dir.name}_from_dir", version="1.0.0", source_dir=str(source_dir),
                         description=f"read from {source_dir}")
  builder = IclFt(config=config, data_dir=None if data_dir is None else os.fspath(data_dir),
                  file_format="array_record")
  builder.download_and_prepare()
  return builder


def read(builder: tfds.core.DatasetBuilder) -> records.Dataset:
  """Reads a prepared builder's splits back into a Dataset (via `as_data_source`)."""
  sources = builder.as_data_source()
  train = tuple(to_document(sources[TRAIN_SPLIT][i]) for i in range(len(sources[TRAIN_SPLIT])))
  tests = {}
  for split, source in sources.items():
    if split.startswith(records.TEST_PREFIX):
      tests[split[len(records.TEST_PREFIX):]] = tuple(to_question(source[i]) for i in range(len(source)))
  card = dict(builder.info.metadata.get("card", {})) if builder.info.metadata else {}
  return records.Dataset(name=card.get("name", builder.builder_config.name), train=train, tests=tests, card=card)
