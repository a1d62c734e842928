"""The study on real Gemma checkpoints on Cloud TPU: train / eval configs per model x slice.

Usage:
  icl-ft-train --config=configs/gemma.py:train,<preset>,<topology>,<dataset> \
      --config.model.checkpoint=gs://BUCKET/gemma2-2b --config.model.tokenizer=gs://BUCKET/tokenizer.model \
      --config.workdir=gs://BUCKET/runs/gemma2_2b/semantic_structure [--config.dry_run=true]
  icl-ft-eval --config=configs/gemma.py:eval,<preset>,<topology>,<condition> \
      --config.model.checkpoint=gs://BUCKET/gemma2-2b --config.model.tokenizer=gs://BUCKET/tokenizer.model \
      --config.run=gemma2_2b-pretrained [--config.datasets=data/semantic_structure]

e.g. configs/gemma.py:train,gemma2_2b,v5e-8,semantic_structure and
configs/gemma.py:eval,gemma2_2b,v5e-8,icl.

  preset     gemma2_2b, gemma2_9b, gemma3_1b, gemma3_4b, gemma3_12b, gemma3_27b
  topology   v4-8, v5e-8, v5e-16, v5p-8, v5p-32 (icl_ft/scale/topologies.py: chips, hosts, HBM)
  dataset    simple_reversals, syllogisms, celebrities, semantic_structure (train: its recipe,
             icl_ft.scale.topologies.RECIPES: batch 16, lr 3e-4, 200-1000 steps, sequence length;
             data.dataset_dir = data/<dataset>)
  condition  pretrained, icl, ft (eval; `ft` needs model.checkpoint = the finetuned run's
             checkpoints with checkpoint_format icl_ft; datasets = all four data/<name> dirs)

Built on the package's train and eval configs (icl_ft.config.schema: every other field and its
default comes from there, as in configs/train.py and configs/eval.py). What this adds: the preset in bfloat16 compute with float32 parameters, checkpoint
format "gemma" (the official release; weights and tokenizer paths are flags), the slice's
mesh (all chips on fsdp), `device_memory_gib` = the slice's HBM per chip (so
`--config.dry_run=true` checks the fit). Multi-host slices initialize jax.distributed through
ICL_FT_MULTIHOST=1, which launch_tpu.sh sets (or --config.multihost.initialize=true).
Which preset fits which slice: the table in docs/running-on-tpu.md (`python -m icl_ft.scale`).
"""

import itertools

import ml_collections

from icl_ft.config import schema
from icl_ft.scale import topologies


def _apply_scale(config: ml_collections.ConfigDict, preset: str, topo: topologies.Topology) -> None:
  config.model.preset = preset
  config.model.checkpoint_format = "gemma"
  config.model.dtype = "bfloat16"
  config.model.param_dtype = "float32"
  for axis, size in topo.mesh.items():
    config.mesh[axis] = size
  config.device_memory_gib = topo.hbm_gib
  # Multi-host slices: launch_tpu.sh's ICL_FT_MULTIHOST=1 turns jax.distributed on, so the same
  # config also dry-runs on one machine (simulated devices) without a coordinator.


def train_config(preset: str, topology: str, dataset: str) -> ml_collections.ConfigDict:
  """Finetuning `preset` on `dataset` on a `topology` slice."""
  topo, recipe = topologies.topology(topology), topologies.recipe(dataset)
  config = schema.as_config_dict(
      schema.TrainConfig(model=schema.ModelConfig(preset=topologies.check_preset(preset))))
  _apply_scale(config, preset, topo)
  config.data.dataset_dir = f"data/{dataset}"
  config.data.seq_len = recipe.seq_len
  config.data.batch_size = recipe.batch_size
  config.optimizer.learning_rate = recipe.learning_rate
  config.steps = recipe.steps
  config.checkpoint.every = recipe.steps  # the final step only: the eval reads that one
  config.checkpoint.keep = 1
  return config


def eval_config(preset: str, topology: str, condition: str) -> ml_collections.ConfigDict:
  """Scoring `preset` under `condition` on every dataset, on a `topology` slice."""
  topo = topologies.topology(topology)
  if condition not in topologies.CONDITIONS:
    raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(topologies.CONDITIONS)}")
  config = schema.as_config_dict(schema.EvalConfig(condition=condition))
  _apply_scale(config, topologies.check_preset(preset), topo)
  if condition == "ft":  # the finetuned weights are our own training checkpoints
    config.model.checkpoint_format = "icl_ft"
  config.datasets = ",".join(f"data/{d}" for d in topologies.DATASETS)
  config.run = f"{preset}-{condition}"
  # Several rows per chip; a multiple of the data-parallel size (= chips).
  config.scoring.batch_size = 4 * topo.chips
  return config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """`train,<preset>,<topology>,<dataset>` or `eval,<preset>,<topology>,<condition>`."""
  parts = [p.strip() for p in arg.split(",")]
  if len(parts) != 4 or parts[0] not in ("train", "eval"):
    raise ValueError(f"configs/gemma.py needs 'train,<preset>,<topology>,<dataset>' or "
                     f"'eval,<preset>,<topology>,<condition>', got {arg!r}")
  kind, preset, topology, what = parts
  return (train_config if kind == "train" else eval_config)(preset, topology, what)


# Every documented argument (tests/test_configs.py loads and validates each).
ARGS = tuple(
    [f"train,{p},{t},{d}" for p, t, d in itertools.product(topologies.PRESETS, topologies.TOPOLOGIES,
                                                            topologies.DATASETS)]
    + [f"eval,{p},{t},{c}" for p, t, c in itertools.product(topologies.PRESETS, topologies.TOPOLOGIES,
                                                             topologies.CONDITIONS)])
