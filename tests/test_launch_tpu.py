"""launch_tpu.sh: the gcloud commands it prints for a pod, and its argument errors.

The remote command of `run` is also executed here, in a fake home directory with a fake binary,
to check what the workers would run: the binary's argv after two rounds of shell quoting, and
that the ssh command returns at once while the binary keeps running.
"""

import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import ml_collections
import pytest

from icl_ft import config_checks
from icl_ft import scale
from tests.test_configs import CONFIGS, _load

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch_tpu.sh"
POD = ["--name", "icl-ft", "--zone", "us-east5-a", "--project", "my-proj", "--accelerator-type", "v5p-32"]


def _launch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False)


def _commands(*args: str) -> list[list[str]]:
  result = _launch("--print", *args)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def _flag(argv: list[str], name: str) -> str:
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def _config_with_overrides(argv: list[str]) -> ml_collections.ConfigDict:
  """The config a binary would build from `--config=configs/<file>.py:<arg> --config.x=v ...`."""
  path, _, arg = argv[0].removeprefix("--config=").partition(":")
  config = _load(ROOT / path).get_config(arg)
  for flag in argv[1:]:
    name, _, value = flag.removeprefix("--config.").partition("=")
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = type(node[leaf])(value)  # str / int / float fields, as absl casts them
  return config


def test_help_documents_every_step_and_option():
  result = _launch("--help")
  assert result.returncode == 0
  for word in ("create", "copy", "install", "run", "logs", "delete", "--print", "--spot", "--queued",
               "--accelerator-type", "--version", "--repo", "--ref", "--python", "--binary", "--config",
               "--name", "--zone", "--project"):
    assert re.search(rf"^  {re.escape(word)}\b", result.stdout, re.M), word
  for env in ("TPU_NAME", "TPU_ZONE", "TPU_PROJECT", "TPU_TYPE", "TPU_VERSION", "TPU_SPOT", "TPU_QUEUED",
              "ICL_FT_REPO", "ICL_FT_REF", "ICL_FT_PYTHON", "ICL_FT_BINARY", "ICL_FT_CONFIG",
              "ICL_FT_MULTIHOST"):
    assert env in result.stdout, env
  # Every option the parser accepts is documented (and the other way round).
  script = SCRIPT.read_text()
  parsed = set(re.findall(r"^    (--[a-z-]+)\)", script, re.M))
  documented = set(re.findall(r"^  (--[a-z-]+)", result.stdout, re.M))
  assert parsed == documented, (parsed, documented)
  # The example works: its config loads and, with its flags, passes the binary's full validation.
  example = " ".join(l.strip().rstrip("\\") for l in result.stdout.split("Example", 1)[1].splitlines()[1:6])
  argv = shlex.split(example)
  assert argv[:2] == ["./launch_tpu.sh", "all"]
  extra = argv[argv.index("--") + 1:]
  config = _config_with_overrides([f"--config={argv[argv.index('--config') + 1]}", *extra])
  assert argv[argv.index("--binary") + 1] == "icl-ft-train"
  assert config_checks.validate(config, require_inputs=True) == "train"
  assert config.mesh.fsdp == scale.TOPOLOGIES["v5p-32"].chips


def test_pod_commands_run_on_every_worker():
  """A 4-worker v5p-32: every worker gets the code, the install and the same binary command."""
  assert scale.TOPOLOGIES["v5p-32"].hosts == 4
  config = "configs/gemma.py:train,gemma2_2b,v5p-32,semantic_structure"
  overrides = ["--config.model.checkpoint=/home/me/gcs/gemma/gemma2-2b",
               "--config.model.tokenizer=/home/me/gcs/gemma/tokenizer.model",
               "--config.workdir=/home/me/gcs/runs/it's a dir"]  # quotes and spaces survive
  commands = _commands("all", *POD, "--spot", "--binary", "icl-ft-train", "--config", config, "--",
                       *overrides)
  create, archive, scp, untar, install, start, logs = commands
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "icl-ft"
  assert _flag(create, "accelerator-type") == "v5p-32" and "--spot" in create
  assert _flag(create, "version") == scale.TOPOLOGIES["v5p-32"].runtime_version
  assert archive[:2] == ["git", "-C"] and "archive" in archive
  assert scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp
  for ssh in (untar, install, start):
    assert ssh[3:5] == ["tpu-vm", "ssh"] and "--worker=all" in ssh
    assert _flag(ssh, "zone") == "us-east5-a" and _flag(ssh, "project") == "my-proj"
  assert archive[-1] == "HEAD" and archive[archive.index("-o") + 1].endswith(".tar.gz")
  assert scp[5] == archive[archive.index("-o") + 1] and scp[6] == "icl-ft:~/icl_ft.tar.gz"
  # install: a Python the package accepts (the TPU images' 3.10 is too old), jax[tpu], the package.
  remote_install = _flag(install, "command")
  requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
  python = remote_install.split("--python ", 1)[1].split()[0]
  assert requires == ">=3.11" and tuple(map(int, python.split("."))) >= (3, 11)
  assert "uv venv" in remote_install and "'jax[tpu]' -e ~/icl_ft" in remote_install
  # The remote command is itself a shell line: parse it again to check the binary's argv survives quoting.
  remote = shlex.split(_flag(start, "command").split("nohup ", 1)[1].split(" >", 1)[0])
  assert remote == ["icl-ft-train", f"--config={config}", *overrides]
  assert config_checks.validate(_config_with_overrides(remote[1:]), require_inputs=True) == "train"
  assert "ICL_FT_MULTIHOST=1" in _flag(start, "command")
  assert logs[3:5] == ["tpu-vm", "ssh"] and "--worker=0" in logs and "~/icl_ft.log" in _flag(logs, "command")


def test_run_command_on_a_worker(tmp_path):
  """The remote `run` line, executed by bash in a fake home: argv, environment, returns at once."""
  home = tmp_path / "home"
  (home / "icl_ft").mkdir(parents=True)
  (home / "venv" / "bin").mkdir(parents=True)
  (home / "venv" / "bin" / "activate").write_text('export PATH="$HOME/venv/bin:$PATH"\n')
  binary = home / "venv" / "bin" / "icl-ft-eval"
  binary.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys, time\n"
                    "print('started', flush=True)\n"
                    "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
                    "'multihost': os.environ.get('ICL_FT_MULTIHOST')}, "
                    "open(os.path.expanduser('~/ran.json'), 'w'))\n"
                    "time.sleep(6)\n"
                    "print('finished')\n")
  binary.chmod(0o755)
  args = ["--config.run=a b", "--config.datasets=data/x,data/y", "--config.model.tokenizer=$HOME/t;1"]
  (start,) = _commands("run", *POD, "--binary", "icl-ft-eval", "--config", "configs/eval.py:icl", "--", *args)
  env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
  t0 = time.time()
  # The ssh session ends when the remote shell exits and nothing holds its output open.
  subprocess.run(["bash", "-c", _flag(start, "command")], env=env, capture_output=True, timeout=5,
                 check=True)
  assert time.time() - t0 < 5
  ran = home / "ran.json"
  for _ in range(100):
    if ran.exists() and ran.stat().st_size:
      break
    time.sleep(0.1)
  got = json.loads(ran.read_text())
  assert got == {"argv": ["--config=configs/eval.py:icl", *args], "cwd": str(home / "icl_ft"),
                 "multihost": "1"}
  assert "started" in (home / "icl_ft.log").read_text()


@pytest.mark.parametrize("topology", sorted(scale.TOPOLOGIES))
def test_runtime_version_follows_the_accelerator_type(topology):
  topo = scale.TOPOLOGIES[topology]
  pod = [a if a != "v5p-32" else topo.accelerator_type for a in POD]
  (create,) = _commands("create", *pod)
  assert _flag(create, "accelerator-type") == topo.accelerator_type
  assert _flag(create, "version") == topo.runtime_version
  (create,) = _commands("create", *pod, "--version", "my-runtime")
  assert _flag(create, "version") == "my-runtime"


def test_queued_spot_create_and_delete():
  create, describe, delete = _commands("create", "delete", *POD, "--spot", "--queued")
  assert create[3:6] == ["queued-resources", "create", "icl-ft-qr"]
  assert _flag(create, "node-id") == "icl-ft" and _flag(create, "runtime-version") == "v2-alpha-tpuv5"
  assert "--spot" in create
  assert describe[3:5] == ["queued-resources", "describe"]
  assert delete[3:5] == ["queued-resources", "delete"] and "--force" in delete


def test_clone_instead_of_copy():
  (clone,) = _commands("copy", *POD, "--repo", "https://example.com/icl_ft.git", "--ref", "v1")
  remote = _flag(clone, "command")
  assert "git clone --quiet https://example.com/icl_ft.git ~/icl_ft" in remote and "checkout --quiet v1" in remote


def test_environment_variables_stand_in_for_flags():
  env = {"PATH": "/usr/bin:/bin", "TPU_NAME": "n", "TPU_ZONE": "z", "TPU_PROJECT": "p"}
  result = _launch("--print", "delete", env=env)
  assert result.returncode == 0, result.stderr
  assert shlex.split(result.stdout)[5] == "n"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no step"),
        (["run", *POD], "run needs --config"),
        (["create", "--name", "n", "--zone", "z", "--project", "p"], "--accelerator-type"),
        (["delete", "--zone", "z", "--project", "p"], "--name"),
        (["bogus", *POD], "unknown argument 'bogus'"),
        (["run", *POD, "--config", "c.py", "--binary", "rm"], "unknown binary 'rm'"),
        (["delete", *POD, "--zone"], "--zone needs a value"),
    ],
)
def test_bad_arguments_fail_with_one_line(args, message):
  result = _launch("--print", *args, env={"PATH": "/usr/bin:/bin"})
  assert result.returncode == 2
  assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert result.stdout == ""
