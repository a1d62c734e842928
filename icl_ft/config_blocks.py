"""Config blocks shared by the binaries' configs: the model to load and the device mesh.

Config files in configs/ nest these, e.g. `config.model = config_blocks.model_config("gemma2_2b")`
and `config.mesh = config_blocks.mesh_config()`, and the binaries pass them to
`icl_ft.model.loader.load_model(config.model, icl_ft.sharding.make_mesh(...))`
(`icl_ft.sharding.mesh_from_config(config.mesh)` does the latter).

Config files import it as `from icl_ft import config_blocks`: it lives in the package so that
absl's config_flags, which loads config files by path, can always import it.
`config_module(name)` loads a config file the same way.
"""

import importlib.util
import os
import types
from pathlib import Path

import ml_collections

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def config_module(name: str, configs_dir: str | os.PathLike[str] = CONFIGS_DIR
                  ) -> types.ModuleType:
  """`configs_dir`/<name>.py, loaded by path (as absl's config_flags does).

  The default is this checkout's configs/ (an editable install); a config file loading a
  sibling passes its own directory, so it works wherever absl found it.
  """
  path = Path(configs_dir) / f"{name}.py"
  if not path.is_file():
    raise FileNotFoundError(f"config file not found: {path} (the repository's configs/ are "
                            "needed; install with `pip install -e .`)")
  spec = importlib.util.spec_from_file_location(f"icl_ft_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def model_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  """Which model to build and which weights / tokenizer to load into it.

  Fields:
    preset: a name from icl_ft.model.config (e.g. "tiny", "gemma2_2b", "gemma3_1b").
    checkpoint: directory of the weights; "" = fresh random init (seed).
    checkpoint_format: "icl_ft" (our params-only orbax checkpoint, icl_ft.model.checkpoints) or
      "gemma" (an official Gemma release: flat `transformer/layer_N/...` orbax tree).
    tokenizer: path of a SentencePiece `.model` file; "" = none (load_model returns None for it).
    seed: parameter-init seed for a fresh model.
    dtype: compute dtype override ("" = the preset's), e.g. "bfloat16" or "float32".
    param_dtype: parameter dtype override ("" = the preset's).
  """
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.checkpoint = ""
  config.checkpoint_format = "icl_ft"
  config.tokenizer = ""
  config.seed = 0
  config.dtype = ""
  config.param_dtype = ""
  return config


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Mesh axis sizes (-1 = all remaining devices) and overrides of the sharding rules.

  Fields:
    data, fsdp, tensor: axis sizes; their product must equal the device count.
    rules: logical axis name -> mesh axis name, tuple of names, or None; entries update
      icl_ft.sharding.DEFAULT_RULES (e.g. config.mesh.rules.embed = None to stop FSDP of
      the embedding dimension).
  """
  config = ml_collections.ConfigDict()
  config.data = data
  config.fsdp = fsdp
  config.tensor = tensor
  config.rules = ml_collections.ConfigDict()
  return config


def multihost_config() -> ml_collections.ConfigDict:
  """Multi-host initialization (`icl_ft.sharding.initialize_distributed`).

  Fields:
    initialize: call jax.distributed.initialize before anything touches the devices. Also
      turned on by the environment variable ICL_FT_MULTIHOST=1 (launch_tpu.sh's `run` sets it).
    coordinator_address, num_processes (0 = unset), process_id (-1 = unset): unset fields come
      from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, then from JAX's cluster
      auto-detection (TPU pods, SLURM, ...).
    cpu_collectives: jax_cpu_collectives_implementation on CPU ("gloo").
  """
  config = ml_collections.ConfigDict()
  config.initialize = False
  config.coordinator_address = ""
  config.num_processes = 0
  config.process_id = -1
  config.cpu_collectives = "gloo"
  return config


def add_dry_run_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds `dry_run` and `device_memory_gib` (icl_ft.scale.dry_run) to a binary's config; returns it.

  Fields:
    dry_run: compile the step with abstract inputs, print per-device memory and FLOPs, and
      exit 1 if it does not fit; no weights are loaded, nothing is written.
    device_memory_gib: memory per device the dry run checks against; 0 = what the device
      reports (TPU, GPU; CPU reports nothing and is not checked).
  """
  config.dry_run = False
  config.device_memory_gib = 0.0
  return config
