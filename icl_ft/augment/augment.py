"""In-context augmentation: the model writes restatements (local) and inferences (global).

- local: one prompt per training sentence (`templates.local_prompt`); the few-shot block
  every local prompt starts with is prefilled once and shared, the per-sentence suffix is
  sampled in batches.
- global: the training corpus in context (`templates.global_context`), prefilled once; each
  document's suffix (`templates.global_suffix`) is sampled against it in batches. If the
  corpus does not fit `min(max_context_tokens, model max_len - room)` tokens (room = the
  longest suffix + max_new_tokens), a seeded subset of documents is kept (a fixed permutation,
  the largest prefix of it that fits, in dataset order) and the card says so.
- all: local, then global.

Generated text is cut at `templates.STOP`, parsed into statements
(`templates.parse_statements`) and filtered: empty, duplicates (normalized, per strategy),
copies of the input (the sentence, or any sentence of the document) and a last statement cut
by `max_new_tokens` are dropped. Each kept
statement becomes one Document (`aug_<strategy>_<source id>_<k>`) whose metadata carries its
provenance (`strategy`, `source_document`, `source_sentence` for local) and its audit label
(`icl_ft.augment.audit`). The augmented Dataset is the original training documents plus
these, tests unchanged, and the card gains an `augmentation` block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from icl_ft import sharding
from icl_ft.augment import audit as audit_lib
from icl_ft.augment import templates
from icl_ft.datasets import records
from icl_ft.datasets.text import normalize
from icl_ft.inference import prefill
from icl_ft.inference import sampling as sampling_lib
from icl_ft.inference import scoring
from icl_ft.model import loader

STRATEGIES = ("local", "global", "all")
DEFAULT_SAMPLING = sampling_lib.SamplingParams(max_new_tokens=128, temperature=0.7, top_p=0.95,
                                               stop=(templates.STOP,))


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt: its source and what a copy of the input would look like."""

  source: records.Document
  sentence: int | None  # local: index into source.sentences
  suffix: str  # the text sampled after the shared context
  inputs: frozenset[str]  # normalized texts whose copies are dropped


def _strategies(strategy: str) -> tuple[str, ...]:
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown augmentation strategy {strategy!r}; valid: {list(STRATEGIES)}")
  return ("local", "global") if strategy == "all" else (strategy,)


def with_stop(params: sampling_lib.SamplingParams | None) -> sampling_lib.SamplingParams:
  """`params` (default DEFAULT_SAMPLING) with templates.STOP among the stop strings."""
  params = params or DEFAULT_SAMPLING
  if templates.STOP not in params.stop:
    params = dataclasses.replace(params, stop=(*params.stop, templates.STOP))
  return params


def local_parts(sentence: str) -> tuple[str, str]:
  """(shared few-shot prefix, per-sentence suffix) of `templates.local_prompt(sentence)`."""
  marker = "\x00"
  split_at = templates.local_prompt(marker).rindex(f"{templates.STATEMENT_LABEL} {marker}")
  full = templates.local_prompt(sentence)
  prefix = full[:split_at]
  if templates.local_prompt(marker)[:split_at] != prefix:
    raise AssertionError("local_prompt's few-shot block depends on the sentence")
  return prefix, full[split_at:]


def local_requests(dataset: records.Dataset) -> tuple[str, list[Request]]:
  """The shared few-shot context and one request per training sentence."""
  prefix = local_parts("x")[0]
  out = []
  for doc in dataset.train:
    for i, sentence in enumerate(doc.sentences):
      clean = " ".join(sentence.split())
      if clean.startswith(templates.BULLET):  # list-format documents: "- Dax are feps."
        clean = clean[len(templates.BULLET):]
      if not clean:
        continue
      out.append(Request(doc, i, local_parts(clean)[1], frozenset({normalize(clean)})))
  return prefix, out


def global_requests(dataset: records.Dataset) -> list[Request]:
  """One request per training document (its suffix after the corpus)."""
  out = []
  for doc in dataset.train:
    inputs = {normalize(s) for s in doc.sentences} | {normalize(doc.text)}
    out.append(Request(doc, None, templates.global_suffix(doc.text), frozenset(inputs)))
  return out


def fit_corpus(tokenizer: Any, documents: Sequence[records.Document], budget: int,
               seed: int) -> tuple[list[records.Document], int]:
  """The most documents whose global context ([BOS] + text) fits `budget` tokens; (docs, tokens).

  Documents are taken along a seeded permutation (so a smaller budget keeps a subset of a
  larger one's), then put back in dataset order. Raises ValueError if not even one fits.
  """
  docs = list(documents)
  order = np.random.default_rng(seed).permutation(len(docs))

  def take(m: int) -> list[records.Document]:
    return [docs[i] for i in sorted(int(j) for j in order[:m])]

  def size(m: int) -> int:
    text = templates.global_context([d.text for d in take(m)])
    return len(prefill.encode_context(tokenizer, text))

  if size(len(docs)) <= budget:
    return docs, size(len(docs))
  lo, hi = 0, len(docs)  # size(lo) fits (lo = 0 taken as fitting), size(hi) does not
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if size(mid) <= budget:
      lo = mid
    else:
      hi = mid
  if lo == 0 or size(lo) > budget:
    raise ValueError(f"global augmentation: not even one document fits the context budget of "
                     f"{budget} tokens (first needs {size(1)})")
  return take(lo), size(lo)


def _generated(requests: Sequence[Request], completions: Sequence[sampling_lib.Completion],
               strategy: str, auditor: audit_lib.Auditor, counts: dict[str, int]
               ) -> list[records.Document]:
  """Parsed, filtered, audited statements as Documents (counts updated in place)."""
  seen: set[str] = set()
  out = []
  per_source: dict[str, int] = {}
  for req, comp in zip(requests, completions, strict=True):
    statements = templates.parse_statements(comp.text)
    if comp.finish_reason == "length":  # the last statement was cut by max_new_tokens
      finished = templates.parse_statements(comp.text, complete=False)
      counts["dropped_cut"] += len(statements) - len(finished)
      statements = finished
    counts["statements"] += len(statements)
    counts["finished_by_stop"] += comp.finish_reason == "stop"
    for st in statements:
      key = normalize(st)
      if not key:
        counts["dropped_empty"] += 1
        continue
      if key in req.inputs:
        counts["dropped_copy"] += 1
        continue
      if key in seen:
        counts["dropped_duplicate"] += 1
        continue
      seen.add(key)
      k = per_source.get(req.source.id, 0)
      per_source[req.source.id] = k + 1
      meta = {"strategy": strategy, "source_document": req.source.id, "generated": True,
              "audit": auditor.label(st)}
      if req.sentence is not None:
        meta["source_sentence"] = req.sentence
      out.append(records.Document(id=f"aug_{strategy}_{req.source.id}_{k:03d}", text=st,
                                  sentences=(st,), fact_ids=(), metadata=meta))
  counts["kept"] = len(out)
  return out


def augment_dataset(model: Any, tokenizer: Any, dataset: records.Dataset, strategy: str, *,
                    sampling: sampling_lib.SamplingParams | None = None,
                    max_context_tokens: int | None = None, seed: int = 0, mesh: Any = None,
                    rules: Any = None, progress: bool = True, batch_size: int = 32,
                    prefill_chunk: int = 1024) -> records.Dataset:
  """The dataset with generated training documents added (strategy: local | global | all).

  `seed` drives both the sampling (unless `sampling` is given, whose own seed is used) and
  the corpus subsample of global augmentation.
  """
  names = _strategies(strategy)
  if not dataset.train:
    raise ValueError(f"dataset {dataset.name!r} has no training documents to augment")
  params = with_stop(sampling if sampling is not None
                     else dataclasses.replace(DEFAULT_SAMPLING, seed=seed))
  sampler = sampling_lib.Sampler(model, tokenizer, batch_size=batch_size, mesh=mesh,
                                 rules=rules, prefill_chunk=prefill_chunk)
  auditor = audit_lib.Auditor(dataset)
  generated: list[records.Document] = []
  report: dict[str, Any] = {}
  for name in names:
    counts = {"prompts": 0, "statements": 0, "finished_by_stop": 0, "dropped_empty": 0,
              "dropped_copy": 0, "dropped_duplicate": 0, "dropped_cut": 0, "kept": 0}
    info: dict[str, Any] = {}
    if name == "local":
      context, requests = local_requests(dataset)
    else:
      requests = global_requests(dataset)
      context = None
    ids = tokenizer.encode_batch([r.suffix for r in requests])
    longest = max(len(x) for x in ids)
    room = prefill.bucket_length(longest) + params.max_new_tokens
    if name == "global":
      budget = sampler.max_len - room if sampler.max_len else None
      if budget is None or (max_context_tokens is not None and max_context_tokens < budget):
        budget = max_context_tokens
      corpus = list(dataset.train)
      if budget is not None:
        if budget < 1:
          raise ValueError(f"global augmentation: no room for a context (model max length "
                           f"{sampler.max_len}, room for suffix + generation {room})")
        corpus, _ = fit_corpus(tokenizer, dataset.train, budget, seed)
      context = templates.global_context([d.text for d in corpus])
      info = {"context_documents": len(corpus), "train_documents": len(dataset.train),
              "subsampled": len(corpus) < len(dataset.train), "context_budget": budget,
              "subsample_seed": seed}
    if sampler.max_len is not None:
      n_ctx = len(prefill.encode_context(tokenizer, context))
      room = min(room, sampler.max_len - n_ctx)
    prefilled = sampler.prefill(context, room=room)
    info["context_tokens"] = prefilled.num_tokens
    completions = sampler.generate_ids(ids, params, context=prefilled, progress=progress,
                                       desc=f"augment {dataset.name} ({name})")
    counts["prompts"] = len(requests)
    docs = _generated(requests, completions, name, auditor, counts)
    generated.extend(docs)
    report[name] = {"counts": counts,
                    "audit": audit_lib.summarize(d.metadata["audit"] for d in docs), **info}
  card = dict(dataset.card)
  card["augmentation"] = {
      "strategy": strategy,
      "strategies": report,
      "counts": {"original_documents": len(dataset.train), "generated_documents": len(generated)},
      "audit": audit_lib.summarize(d.metadata["audit"] for d in generated),
      "sampling": params.to_json(),
      "seed": seed,
      "source_name": dataset.name,
  }
  return records.Dataset(name=dataset.name, train=tuple(dataset.train) + tuple(generated),
                         tests=dataset.tests, card=card)


def write_augmented(dataset: records.Dataset, directory: Any, *, overwrite: bool = False) -> Any:
  """Writes an augmented dataset atomically (`records.write_dataset`); returns the directory."""
  return records.write_dataset(dataset, directory, overwrite=overwrite)


def sampling_from_config(config: Any) -> sampling_lib.SamplingParams:
  """SamplingParams from `config.sampling` (configs/augment.py) and `config.seed`."""
  s = config.sampling
  return with_stop(sampling_lib.SamplingParams(
      max_new_tokens=int(s.max_new_tokens), temperature=float(s.temperature),
      top_p=float(s.top_p), seed=int(config.seed)))


def run(config: Any) -> tuple[Any, records.Dataset]:
  """configs/augment.py: read the dataset, load the model, augment, write; (directory, dataset).

  Every input check (strategy, directories, tokenizer, sampling values) happens before the
  model is loaded; nothing is written unless augmentation succeeded.
  """
  _strategies(config.strategy)
  if not config.dataset_dir:
    raise ValueError("no dataset: set --config.dataset_dir=DIR (written by icl-ft-data)")
  if not config.output_dir:
    raise ValueError("no output: set --config.output_dir=DIR")
  out = Path(config.output_dir)
  if out.exists() and not config.overwrite:
    raise FileExistsError(f"output already exists: {out} (pass --config.overwrite=true to "
                          "replace it)")
  if Path(config.output_dir).resolve() == Path(config.dataset_dir).resolve():
    raise ValueError(f"output_dir {out} is the input dataset directory")
  dataset = records.read_dataset(config.dataset_dir)
  params = sampling_from_config(config)
  if not config.model.tokenizer:
    raise ValueError("no tokenizer: set --config.model.tokenizer=PATH (a SentencePiece .model)")
  max_ctx = int(config.max_context_tokens) or None
  if max_ctx is not None and max_ctx < 1:
    raise ValueError(f"max_context_tokens must be >= 0, got {config.max_context_tokens}")
  mesh, rules = sharding.mesh_from_config(config.mesh)
  model, tokenizer = loader.load_model(config.model, mesh, rules)
  augmented = augment_dataset(model, tokenizer, dataset, config.strategy, sampling=params,
                              max_context_tokens=max_ctx, seed=int(config.seed), mesh=mesh,
                              rules=rules, progress=bool(config.progress),
                              batch_size=int(config.batch_size),
                              prefill_chunk=int(config.prefill_chunk))
  card = dict(augmented.card)
  card["augmentation"] = {**card["augmentation"], "source_dir": str(config.dataset_dir),
                          "model": {k: getattr(config.model, k) for k in ("preset", "checkpoint",
                                                                   "checkpoint_format",
                                                                   "tokenizer")}}
  augmented = dataclasses.replace(augmented, card=card)
  if jax.process_index() == 0:
    write_augmented(augmented, out, overwrite=bool(config.overwrite))
  return out, augmented
