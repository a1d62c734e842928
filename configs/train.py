"""Config for `icl-ft-train`: finetune a model on one dataset's training documents.

Usage:
  icl-ft-train --config=configs/train.py:<preset> --config.workdir=runs/x \
      --config.data.dataset_dir=data/simple_reversals --config.data.format=split_cumulative \
      [--config.model.checkpoint=ckpt/pretrained --config.model.tokenizer=tok.model] \
      [--config.steps=500 --config.data.batch_size=16 --config.optimizer.learning_rate=3e-4]

`<preset>` is a model preset of icl_ft.model.config (default "tiny"). Paper defaults: batch 8
or 16, learning rate 3e-4, 200-1000 steps (here 500 with batch 16).

Outputs under `workdir`: checkpoints/<step>/ (orbax: params, opt_state, step, data_iter,
meta), metrics.jsonl, tensorboard/events.out.tfevents.*. A run whose checkpoint directory
already holds steps resumes from the latest complete one.
"""

import ml_collections

from icl_ft import config_blocks


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Training config for model preset `arg` ("" = "tiny")."""
  config = ml_collections.ConfigDict()
  config.workdir = ""  # required: checkpoints/, metrics.jsonl, tensorboard/ go here

  config.model = config_blocks.model_config(arg or "tiny")
  config.mesh = config_blocks.mesh_config()

  # Data: a dataset directory written by icl-ft-data (train.jsonl + card.json).
  config.data = ml_collections.ConfigDict()
  config.data.dataset_dir = ""
  config.data.format = "split_cumulative"  # document | split_independent | split_cumulative
  config.data.seq_len = 256
  config.data.batch_size = 16  # global batch (rows of seq_len packed tokens)
  config.data.seed = 0
  config.data.num_packing_bins = 0  # 0 = the pipeline's default

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-4
  config.optimizer.schedule = "cosine"  # constant | cosine | linear (after warmup)
  config.optimizer.warmup_steps = 20
  config.optimizer.final_lr_fraction = 0.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.clip_norm = 1.0  # 0 = no clipping

  config.steps = 500

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.dir = ""  # "" = <workdir>/checkpoints
  config.checkpoint.every = 100
  config.checkpoint.keep = 2
  config.checkpoint.async_save = True
  config.checkpoint.resume = True  # resume from the latest complete checkpoint if any

  # Held-out loss (optional): every `every` steps, up to `num_batches` batches of one pass.
  config.eval = ml_collections.ConfigDict()
  config.eval.dataset_dir = ""  # "" = no eval
  config.eval.format = ""  # "" = data.format
  config.eval.every = 100
  config.eval.num_batches = 8

  config.log = ml_collections.ConfigDict()
  config.log.every = 1  # JSONL / TensorBoard record every N steps
  config.log.tensorboard = True
  config.log.progress = True  # tqdm bar (process 0)
  config.log.batch_ids = False  # log the example ids of each batch (resume tests, debugging)

  # Multi-host: jax.distributed.initialize before anything else touches the devices
  # (also turned on by ICL_FT_MULTIHOST=1, as launch_tpu.sh sets it).
  config.multihost = config_blocks.multihost_config()
  # --config.dry_run=true: compile the train step abstractly, print memory / FLOPs per device.
  config_blocks.add_dry_run_fields(config)
  return config
