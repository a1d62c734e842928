"""The study's finetuning data: example counts, steps, tokens trained on, augmented datasets, and
the tokenizer of smoke setups (a fresh model without one)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_ft.augment import audit
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.datasets import words
from icl_ft.model.tokenizer import train_sentencepiece
from icl_ft.pipeline import formats
from icl_ft.pipeline import loader as data_loader


def next_pow2(n: int) -> int:
  """The smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(0, (int(n) - 1).bit_length())


def example_stats(dataset: records.Dataset, fmt: str, tokenizer: Any) -> dict[str, Any]:
  """Counts of the training examples of `dataset` in format `fmt` (tokens as the pipeline makes them)."""
  examples = formats.examples(dataset, fmt)
  elements = data_loader.tokenize_examples(examples, tokenizer)
  lengths = [len(e["tokens"]) for e in elements]
  return {"format": fmt, "documents": len(dataset.train), "examples": len(examples),
          "tokens_per_epoch": int(sum(lengths)),
          "target_tokens_per_epoch": int(sum(int(e["loss_mask"].sum()) for e in elements)),
          "longest_example": int(max(lengths))}


def finetuning_steps(train_cfg: schema.StudyTrain, stats: Mapping[str, Any]) -> int:
  """`train_cfg.steps`, or (0) the steps for `train_cfg.epochs` passes over the examples.

  A step holds `batch_size` rows of `seq_len` tokens; packing fills ~95% of them.
  """
  if int(train_cfg.steps) > 0:
    return int(train_cfg.steps)
  rows = int(train_cfg.batch_size) * int(train_cfg.seq_len) * 0.95
  return max(1, math.ceil(float(train_cfg.epochs) * stats["tokens_per_epoch"] / rows))


def metrics_totals(workdir: Path, steps: int) -> dict[str, Any]:
  """Tokens trained on (all rows, loss positions) and the last loss, from metrics.jsonl."""
  tokens = loss_tokens = 0.0
  last = None
  path = workdir / "metrics.jsonl"
  if path.is_file():
    for line in path.read_text(encoding="utf-8").splitlines():
      if not line.strip():
        continue
      r = json.loads(line)
      if "loss" not in r or int(r.get("step", 0)) > steps:
        continue
      tokens += float(r.get("tokens", 0.0))
      loss_tokens += float(r.get("loss_tokens", 0.0))
      last = r
  return {"tokens_seen": int(tokens), "loss_tokens_seen": int(loss_tokens),
          "final_loss": None if last is None else float(last["loss"])}


def train_tokenizer(datasets: Sequence[records.Dataset], vocab_size: int, path: Path) -> None:
  """A SentencePiece tokenizer on the study's own text (smoke setups with a fresh model)."""
  texts = [d.text for ds in datasets for d in ds.train]
  texts += [q.prompt + c for ds in datasets for qs in ds.tests.values() for q in qs
            for c in q.choices]
  texts += list(words.pool("pretraining"))  # enough distinct text for the preset's pieces
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  train_sentencepiece(texts, vocab_size, tmp)
  os.replace(tmp, path)


def merge_augmented(original: records.Dataset, parts: Sequence[records.Dataset]
                    ) -> records.Dataset:
  """`original` + the generated documents of each augmented `parts` (in order), one card.

  Local and global augmentation of the same seed merged this way are exactly what
  `augment_dataset(..., "all")` produces (it runs local, then global, deduplicating each on
  its own), without sampling everything a second time.
  """
  n = len(original.train)
  generated: list[records.Document] = []
  strategies: dict[str, Any] = {}
  for part in parts:
    if tuple(part.train[:n]) != tuple(original.train):
      raise ValueError(f"augmented dataset {part.name!r} does not start with the original "
                       "training documents")
    generated += part.train[n:]
    strategies.update(part.card["augmentation"]["strategies"])
  first = parts[0].card["augmentation"]
  card = dict(original.card)
  card["augmentation"] = {
      "strategy": "all", "strategies": strategies,
      "counts": {"original_documents": n, "generated_documents": len(generated)},
      "audit": audit.summarize(d.metadata["audit"] for d in generated),
      "sampling": first["sampling"], "seed": first["seed"], "source_name": original.name,
  }
  return records.Dataset(name=original.name, train=tuple(original.train) + tuple(generated),
                         tests=original.tests, card=card)
