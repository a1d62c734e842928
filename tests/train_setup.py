"""Shared setup of the training tests: a small dataset, a tokenizer, a tiny model config.

Not a test module (no `test_` prefix); tests/test_train.py, test_resume.py and
test_multihost.py import it (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import types
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(REPO, "configs")
TRAIN_CONFIG = os.path.join(CONFIGS_DIR, "train.py")


def config_file(name: str) -> types.ModuleType:
  """The repository's configs/<name>.py, loaded by path (as absl's config_flags does)."""
  spec = importlib.util.spec_from_file_location(f"icl_ft_configs_{name}",
                                                os.path.join(CONFIGS_DIR, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read_scalars(directory: str | os.PathLike[str]) -> list[tuple[int, dict[str, float]]]:
  """(step, {tag: value}) of every event with scalars in `directory`, read by TensorBoard's own loader."""
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.util import tensor_util

  out = []
  for name in sorted(os.listdir(directory)):
    for event in event_file_loader.EventFileLoader(os.path.join(directory, name)).Load():
      if event.HasField("summary"):
        out.append((event.step, {v.tag: float(tensor_util.make_ndarray(v.tensor))
                                 for v in event.summary.value}))
  return out


def apply_overrides(config, overrides: dict[str, Any]):
  """Sets `config.a.b = v` for each `a__b=v` of `overrides`; returns `config`."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def setup(tmp_path_factory, name: str) -> tuple[str, str]:
  """The module fixture: compilation cache (session-wide) + data and tokenizer."""
  enable_compilation_cache(str(tmp_path_factory.getbasetemp() / "jax_compilation_cache"))
  return make_data(str(tmp_path_factory.mktemp(name)))


def make_data(root: str, *, num_facts: int = 20, articles_per_fact: int = 3, seed: int = 0
              ) -> tuple[str, str]:
  """Writes simple_reversals (small) to root/data and a tokenizer for it; (data_dir, tok_path).

  The tokenizer's vocabulary is sized to the `tiny` model preset, so the binary can build the
  model from the config alone.
  """
  from icl_ft.datasets import records
  from icl_ft.datasets import simple_reversals
  from icl_ft.model.tokenizer import train_sentencepiece

  data_dir = os.path.join(root, "data")
  tok_path = os.path.join(root, "tok.model")
  if not os.path.exists(os.path.join(data_dir, "card.json")):
    params = dataclasses.replace(simple_reversals.SCALES["small"], num_facts=num_facts,
                                 articles_per_fact=articles_per_fact)
    dataset = simple_reversals.generate(params, seed=seed)
    records.write_dataset(dataset, data_dir)
    texts = [d.text for d in dataset.train]
    texts += [q.prompt + c for qs in dataset.tests.values() for q in qs for c in q.choices]
    train_sentencepiece(texts, tiny_vocab_size(), tok_path)
  return data_dir, tok_path


def tiny_model_config():
  """The `tiny` preset (what configs/train.py:tiny builds)."""
  from icl_ft.model import config as model_config

  return model_config.get_preset("tiny")


def tiny_vocab_size() -> int:
  return int(tiny_model_config().vocab_size)


def train_config(workdir: str, data_dir: str, tok_path: str, **overrides: Any):
  """configs/train.py:tiny for the small data, fast settings; `a__b=v` sets config.a.b = v."""
  config = config_file("train").get_config("tiny")
  config.workdir = workdir
  config.model.tokenizer = tok_path
  config.data.dataset_dir = data_dir
  config.data.format = "split_cumulative"
  config.data.seq_len = 64
  config.data.batch_size = 8
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 2
  config.steps = 6
  config.checkpoint.every = 2
  config.log.progress = False
  config.log.batch_ids = True
  return apply_overrides(config, overrides)


def flags_for(config) -> list[str]:
  """Command-line overrides reproducing `config` on top of configs/train.py:<preset>."""
  out = []

  def walk(prefix, node):
    for k, v in node.items():
      if hasattr(v, "items"):
        walk(f"{prefix}{k}.", v)
      elif v is not None:
        out.append(f"--config.{prefix}{k}={v}")

  walk("", config)
  return out


def binary_command(config) -> list[str]:
  """`python -m icl_ft.bin.train --config=configs/train.py:<preset> --config.x=...`."""
  return [sys.executable, "-m", "icl_ft.bin.train",
          f"--config={TRAIN_CONFIG}:{config.model.preset}", *flags_for(config)]


_CACHE_ENV = {}


def enable_compilation_cache(path: str) -> None:
  """A persistent XLA compilation cache for this process and the binaries the tests start.

  The tests build the same tiny model and train step many times (in-process and in
  subprocesses); compiling them once instead of each time makes the suite several times
  faster. Cache keys cover the program, devices and versions, so hits are exact.
  """
  import jax
  from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top

  os.makedirs(path, exist_ok=True)
  if jax.config.jax_compilation_cache_dir != path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    compilation_cache.reset_cache()  # re-read the settings at the next compile
  _CACHE_ENV.update({
      "JAX_COMPILATION_CACHE_DIR": path,
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
  })


def env(num_devices: int = 8, **extra: str) -> dict[str, str]:
  e = dict(os.environ)
  e.update(_CACHE_ENV)
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  e["JAX_PLATFORMS"] = "cpu"
  e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
  e.update(extra)
  return e


def run_binary(config, *, num_devices: int = 8, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
  return subprocess.run(binary_command(config), env=env(num_devices), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, **popen)
