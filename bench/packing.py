"""Packing efficiency of the training pipeline per dataset x training format.

    python bench/packing.py [--seq_len 256] [--batch 16] [--epochs 5] [--scale paper]
                            [--tokenizer path/to.model]

For every dataset in the registry (paper scale) and every format, builds the training
iterator (`icl_ft.pipeline.loader`) and measures the fraction of non-padding tokens:

- `steady`: over `--epochs` epochs' worth of batches of the endless stream, at most
  `--max_batches` (training repeats the data for a fixed number of steps; this is the number
  that matters),
- `1 epoch`: one finite pass, whose last batch is padded with empty rows (small datasets pay
  for that rounding).

A dataset with an example longer than `--seq_len` is measured at the next power of two that
fits (the printed `seq` column). Without `--tokenizer`, a SentencePiece model (vocab 2000) is
trained on all the datasets' training text, so the numbers are about packing, not about one
particular vocabulary. The last line is one JSON object; `packing_efficiency_min` is the
smallest steady-state efficiency.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from icl_ft.datasets import registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_ft.model.tokenizer import Tokenizer, train_sentencepiece  # pylint: disable=wrong-import-position
from icl_ft.pipeline import formats, loader  # pylint: disable=wrong-import-position


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--batch", type=int, default=16, help="global batch size (rows)")
  parser.add_argument("--epochs", type=float, default=5.0, help="epochs of batches for `steady`")
  parser.add_argument("--max_batches", type=int, default=200, help="cap on batches for `steady`")
  parser.add_argument("--scale", default="paper")
  parser.add_argument("--tokenizer", default="", help="a SentencePiece .model (default: train one)")
  parser.add_argument("--datasets", default=",".join(registry.NAMES))
  parser.add_argument("--formats", default=",".join(formats.FORMATS))
  parser.add_argument("--bins", type=int, default=0,
                      help="num_packing_bins (rows packed at a time; 0 = the loader's default)")
  args = parser.parse_args()

  datasets = {}
  for name in args.datasets.split(","):
    try:
      datasets[name] = registry.generate(name, scale=args.scale)
    except (ImportError, KeyError) as e:  # a dataset module not written yet
      print(f"{name}: skipped ({type(e).__name__}: {e})")
  if args.tokenizer:
    tok = Tokenizer(args.tokenizer)
  else:
    texts = [d.text for ds in datasets.values() for d in ds.train]
    tok = train_sentencepiece(texts, 2000, Path(tempfile.mkdtemp()) / "bench.model", hard_vocab_limit=False)
  print(f"tokenizer: {tok}; global batch {args.batch}; steady = {args.epochs:g} epochs of batches")
  print(f"{'dataset':<20} {'format':<18} {'seq':>5} {'examples':>8} {'mean':>6} {'max':>5} "
        f"{'rows/ep':>7} {'steady':>7} {'1 epoch':>7} {'s':>5}")

  results = {}
  for name, dataset in datasets.items():
    for fmt in args.formats.split(","):
      start = time.time()
      elements = loader.tokenize_examples(formats.examples(dataset, fmt), tok)
      lengths = [len(e["tokens"]) for e in elements]
      seq_len = max(args.seq_len, 2 ** math.ceil(math.log2(max(lengths))))
      epoch_rows = sum(lengths) / seq_len
      kw = dict(fmt=fmt, seq_len=seq_len, global_batch_size=args.batch, seed=0, shard_index=0, shard_count=1,
                num_packing_bins=args.bins or None)
      steady_batches = min(max(1, math.ceil(args.epochs * epoch_rows / args.batch)), args.max_batches)
      steady = loader.packing_efficiency(loader.make_train_iterator(dataset, tok, **kw),
                                         max_batches=steady_batches)
      one = loader.packing_efficiency(loader.make_train_iterator(dataset, tok, num_epochs=1, **kw))
      results[f"{name}/{fmt}"] = {"seq_len": seq_len, "steady": round(steady, 4), "one_epoch": round(one, 4)}
      print(f"{name:<20} {fmt:<18} {seq_len:>5} {len(lengths):>8} {sum(lengths) / len(lengths):>6.1f} "
            f"{max(lengths):>5} {epoch_rows:>7.1f} {steady:>7.2%} {one:>7.2%} {time.time() - start:>5.1f}")

  print(json.dumps({
      "packing_efficiency_min": min(r["steady"] for r in results.values()),
      "seq_len": args.seq_len,
      "num_packing_bins": args.bins or "default",
      "global_batch_size": args.batch,
      "results": results,
  }, sort_keys=True))


if __name__ == "__main__":
  main()
