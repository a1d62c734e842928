"""Every config file in configs/ loads with each of its documented args and validates.

The files are globbed, so new ones are covered without editing this test. A file's documented
args are its module-level `ARGS` (if any) plus every `configs/<file>.py[:arg]` usage in its
docstring (placeholders like `<preset>` skipped; a bare `configs/<file>.py` is the empty arg);
with none documented, the default (`get_config()`) is tried. Each config is validated by
`icl_ft.config.checks.validate` as its kind (train / eval / data / study / augment / pretrain,
recognised by fields; a file of no known kind fails) and all its nested model / mesh /
multihost blocks: what the binaries check before running.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
from pathlib import Path

import ml_collections
import pytest

from icl_ft.config import checks
from icl_ft.scale import topologies

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(p for p in CONFIGS.glob("*.py") if not p.name.startswith("_"))


def _load(path: Path):
  spec = importlib.util.spec_from_file_location(f"test_configs_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def documented_args(path: Path, module) -> list[str]:
  """ARGS + the `configs/<name>.py:<arg>` usages of the docstring (+ "" if it has a default)."""
  args = list(getattr(module, "ARGS", ()))
  doc = module.__doc__ or ""
  for m in re.finditer(rf"configs/{re.escape(path.name)}(?::([^\s`'\"\\]+))?", doc):
    arg = (m.group(1) or "").rstrip(".,;:)")  # sentence punctuation after a usage
    if "<" not in arg and "[" not in arg:
      args.append(arg)
  params = list(inspect.signature(module.get_config).parameters.values())
  if not args and (not params or params[0].default is not inspect.Parameter.empty):
    args.append("")  # nothing documented: the default
  return list(dict.fromkeys(args))


CASES = []
for _path in FILES:
  _module = _load(_path)
  for _arg in documented_args(_path, _module):
    CASES.append(pytest.param(_path, _arg, id=f"{_path.stem}:{_arg}"))


def test_every_config_file_is_covered():
  assert FILES, CONFIGS
  covered = {c.values[0] for c in CASES}
  assert covered == set(FILES), set(FILES) - covered
  assert {"train.py", "eval.py", "data.py", "gemma.py", "augment.py", "study.py",
          "pretrain_tiny.py"} <= {p.name for p in FILES}


def test_augment_config_every_strategy():
  from icl_ft.augment import augment  # pylint: disable=g-import-not-at-top

  module = _load(CONFIGS / "augment.py")
  for strategy in augment.STRATEGIES:
    c = module.get_config(strategy)
    assert checks.validate(c) == "augment" and c.strategy == strategy
  c.model.tokenizer = "tok.model"
  with pytest.raises(ValueError, match="config.dataset_dir is required"):
    checks.validate(c, require_inputs=True)
  c.dataset_dir, c.output_dir = "data/syllogisms", "data/syllogisms_aug"
  assert checks.validate(c, require_inputs=True) == "augment"


def test_pretrain_curriculum_stages_validate_and_grow():
  module = _load(CONFIGS / "pretrain_tiny.py")
  stages = [module.get_config(name) for name in module.CURRICULUM]
  assert all(checks.validate(c) == "pretrain" for c in stages)
  lengths = [c.corpus.max_chars for c in stages]
  scales = [c.corpus.dataset_scale for c in stages]
  assert lengths == sorted(set(lengths)) and scales == sorted(scales)
  long = module.get_config("long")  # the rest of a stage is the long stage's training
  assert all(c.train.data.seq_len == long.train.data.seq_len
             and c.train.optimizer.learning_rate == long.train.optimizer.learning_rate
             for c in stages)
  with pytest.raises(ValueError, match="j600"):
    module.get_config("j601")


@pytest.mark.parametrize("file,field,value,match", [
    ("augment.py", "strategy", "both", "config.strategy 'both' is not one of 'local'"),
    ("augment.py", "sampling.top_p", 1.5, "config.sampling.top_p must be in (0, 1], got 1.5"),
    ("augment.py", "sampling.max_new_tokens", 0, "config.sampling.max_new_tokens must be >= 1"),
    ("augment.py", "mesh.data", 3, "config.batch_size=32 is not a multiple of the data-parallel"),
    ("augment.py", "model.preset", "gemma5", "config.model.preset 'gemma5'"),
    ("pretrain_tiny.py", "train.data.batch_size", 0, "config.train (a configs/train.py config): "
     "config.data.batch_size must be >= 1"),
    ("pretrain_tiny.py", "train.optimizer.schedule", "step", "config.train (a configs/train.py"),
    ("pretrain_tiny.py", "corpus.num_episodes", 0, "config.corpus.num_episodes must be >= 1"),
    ("pretrain_tiny.py", "eval.batch_size", 0, "config.eval.batch_size must be >= 1, got 0"),
    ("pretrain_tiny.py", "corpus.family_weights", "celebs:1",
     "config.corpus: family_weights: unknown entry 'celebs'"),
    ("pretrain_tiny.py", "corpus.kind_weights", "icl=1",
     "config.corpus: weights 'icl=1': each entry is name:weight, got 'icl=1'"),
    ("pretrain_tiny.py", "corpus.kind_weights", "icl:x", "each entry is name:weight, got 'icl:x'"),
    ("study.py", "conditions", "pretrained,finetuned", "unknown condition(s) ['finetuned']"),
    ("study.py", "datasets", "syllogisms,nope", "nope"),
    ("study.py", "train.steps", -1, "config.train.steps must be >= 1, or 0"),
    ("study.py", "model.preset", "gemma5", "config.model.preset 'gemma5'"),
])
def test_other_binaries_validation_names_the_bad_field(file, field, value, match):
  c = _load(CONFIGS / file).get_config()
  checks.validate(c)
  parent, _, name = field.rpartition(".")
  node = c
  for part in parent.split(".") if parent else ():
    node = node[part]
  node[name] = value
  with pytest.raises(ValueError, match=re.escape(match)):
    checks.validate(c)


def test_pretrain_needs_its_workdir():
  c = _load(CONFIGS / "pretrain_tiny.py").get_config("test")
  assert checks.validate(c) == "pretrain"
  with pytest.raises(ValueError, match="config.workdir is required"):
    checks.validate(c, require_inputs=True)
  c.workdir = "/tmp/pt"
  assert checks.validate(c, require_inputs=True) == "pretrain"


@pytest.mark.parametrize("path,arg", CASES)
def test_config_loads_and_validates(path, arg):
  module = _load(path)
  config = module.get_config(arg) if arg or inspect.signature(module.get_config).parameters \
      else module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert checks.validate(config) in checks.VALIDATORS, sorted(config.keys())
  # A locked copy accepts the same overrides a command line gives (no field typos).
  locked = ml_collections.ConfigDict(config.to_dict())
  locked.lock()


def test_gemma_args_cover_every_preset_topology_dataset_condition():
  gemma = _load(CONFIGS / "gemma.py")
  n = len(topologies.PRESETS) * len(topologies.TOPOLOGIES)
  assert len(gemma.ARGS) == n * (len(topologies.DATASETS) + len(topologies.CONDITIONS))


@pytest.mark.parametrize("topology", sorted(topologies.TOPOLOGIES))
def test_gemma_train_config_fields(topology):
  gemma = _load(CONFIGS / "gemma.py")
  topo = topologies.TOPOLOGIES[topology]
  c = gemma.get_config(f"train,gemma2_2b,{topology},semantic_structure")
  assert checks.kind_of(c) == "train"
  assert (c.model.preset, c.model.checkpoint_format, c.model.dtype) == (
      "gemma2_2b", "gemma", "bfloat16")
  assert math.prod([c.mesh.data, c.mesh.fsdp, c.mesh.tensor]) == topo.chips
  assert c.data.batch_size % (c.mesh.data * c.mesh.fsdp) == 0
  assert c.optimizer.learning_rate == 3e-4 and c.data.batch_size in (8, 16)
  assert 200 <= c.steps <= 1000
  assert c.device_memory_gib == topo.hbm_gib
  assert not c.multihost.initialize  # launch_tpu.sh's ICL_FT_MULTIHOST=1 does it on TPU
  assert c.data.dataset_dir == "data/semantic_structure"
  # Paths are flags: a real run refuses to start without them (one line, naming the field).
  with pytest.raises(ValueError, match="config.model.checkpoint is required"):
    checks.validate(c, require_inputs=True)
  c.model.checkpoint = "gs://bucket/gemma2-2b"
  c.model.tokenizer = "gs://bucket/tokenizer.model"
  c.workdir = "gs://bucket/runs/x"
  assert checks.validate(c, require_inputs=True) == "train"


def test_gemma_eval_config_fields():
  gemma = _load(CONFIGS / "gemma.py")
  c = gemma.get_config("eval,gemma3_4b,v5p-32,ft")
  assert checks.kind_of(c) == "eval"
  assert c.condition == "ft" and c.model.checkpoint_format == "icl_ft"
  assert c.scoring.batch_size % 16 == 0
  assert c.datasets.split(",") == [f"data/{d}" for d in topologies.DATASETS]
  c.model.tokenizer = "gs://bucket/tokenizer.model"
  with pytest.raises(ValueError, match="set config.model.checkpoint"):
    checks.validate(c, require_inputs=True)


@pytest.mark.parametrize("arg,match", [
    ("train,gemma2_2b,v9-8,syllogisms", "unknown topology 'v9-8'"),
    ("train,gemma9_2b,v5e-8,syllogisms", "unknown study preset 'gemma9_2b'"),
    ("train,gemma2_2b,v5e-8,nope", "unknown dataset 'nope'"),
    ("eval,gemma2_2b,v5e-8,ft_aug", "unknown condition 'ft_aug'"),
    ("gemma2_2b,v5e-8", "needs 'train,<preset>"),
])
def test_gemma_bad_args(arg, match):
  gemma = _load(CONFIGS / "gemma.py")
  with pytest.raises(ValueError, match=match):
    gemma.get_config(arg)


@pytest.mark.parametrize("field,value,match", [
    ("model.preset", "gemma5", "config.model.preset 'gemma5'"),
    ("model.checkpoint_format", "hf", "checkpoint_format 'hf'"),
    ("mesh.fsdp", 0, "config.mesh.fsdp must be positive or -1"),
    ("data.format", "sentences", "unknown training format 'sentences'"),
    ("data.batch_size", 12, "batch_size=12 is not divisible by the data-parallel size 8"),
    ("steps", 0, "config.steps must be >= 1"),
    ("optimizer.schedule", "step", "step"),
    ("device_memory_gib", -1.0, "device_memory_gib"),
])
def test_validation_names_the_bad_field(field, value, match):
  train = _load(CONFIGS / "train.py")
  c = train.get_config("gemma3_1b")
  c.mesh.data, c.mesh.fsdp = 1, 8
  parent, _, name = field.rpartition(".")
  (c[parent] if parent else c)[name] = value
  with pytest.raises(ValueError, match=re.escape(match)):
    checks.validate(c)


def test_eval_validation():
  ev = _load(CONFIGS / "eval.py")
  c = ev.get_config("ft_x")
  checks.validate(c)  # a finetuned condition loads without a checkpoint ...
  with pytest.raises(ValueError, match="config.run"):
    checks.validate(c, require_inputs=True)  # ... but a real run needs its inputs
  c.condition = "finetuned"
  with pytest.raises(ValueError, match="unknown condition 'finetuned'"):
    checks.validate(c)


@pytest.mark.parametrize("binary", ["train", "eval"])
def test_binaries_honor_icl_ft_multihost(binary, monkeypatch, capsys):
  """launch_tpu.sh runs binaries with ICL_FT_MULTIHOST=1: they initialize before anything."""
  import jax  # pylint: disable=g-import-not-at-top

  from icl_ft.bin import evaluate as eval_bin  # pylint: disable=g-import-not-at-top
  from icl_ft.bin import train as train_bin  # pylint: disable=g-import-not-at-top

  calls = []

  def fake_initialize(**kwargs):
    calls.append(kwargs)
    raise RuntimeError("fake initialize")  # stops the binary right there

  monkeypatch.setattr(jax.distributed, "initialize", fake_initialize)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  config = _load(CONFIGS / ("train.py" if binary == "train" else "eval.py")).get_config()
  execute = train_bin.execute if binary == "train" else eval_bin.execute
  monkeypatch.delenv("ICL_FT_MULTIHOST", raising=False)
  config.dry_run = True
  config.mesh.data = 3  # 8 devices: an error right after the (skipped) initialization
  assert execute(config) == 1 and not calls
  capsys.readouterr()
  monkeypatch.setenv("ICL_FT_MULTIHOST", "1")
  with pytest.raises(RuntimeError, match="fake initialize"):
    execute(config)
  assert calls == [{}]  # TPU VMs: JAX finds coordinator and process ids itself


def test_gemma_config_through_the_binary_command_line():
  """absl parses configs/gemma.py:<arg> and overrides; a 16-chip mesh on 8 devices fails in one line."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  cmd = [sys.executable, "-m", "icl_ft.bin.train",
         "--config=configs/gemma.py:train,gemma3_1b,v5e-16,syllogisms", "--config.dry_run=true",
         "--config.model.checkpoint=gs://bucket/gemma3-1b"]
  proc = subprocess.run(cmd, cwd=CONFIGS.parent, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  err = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert err == [l for l in proc.stderr.splitlines() if l.strip()][-1:]
  assert len(err) == 1 and "16 devices" in err[0] and "8 are available" in err[0], proc.stderr
