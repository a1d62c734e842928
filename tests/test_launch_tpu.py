"""launch_tpu.sh: the gcloud commands it prints for a pod, and its argument errors."""

import shlex
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "launch_tpu.sh"
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


def test_help_documents_every_step_and_option():
  result = _launch("--help")
  assert result.returncode == 0
  for word in ("create", "copy", "install", "run", "logs", "delete", "--print", "--spot", "--queued",
               "--accelerator-type", "--config", "TPU_NAME"):
    assert word in result.stdout


def test_pod_commands_run_on_every_worker():
  config = "configs/study.py:gemma2_2b"
  commands = _commands("all", *POD, "--spot", "--config", config, "--",
                       "--config.model.checkpoint=gs://bucket/ckpt", "--config.run_name=two words")
  create, archive, scp, untar, install, start, logs = commands
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "icl-ft"
  assert _flag(create, "accelerator-type") == "v5p-32" and "--spot" in create
  assert archive[:2] == ["git", "-C"] and "archive" in archive
  assert scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp
  for ssh in (untar, install, start):
    assert ssh[3:5] == ["tpu-vm", "ssh"] and "--worker=all" in ssh
    assert _flag(ssh, "zone") == "us-east5-a" and _flag(ssh, "project") == "my-proj"
  assert "jax[tpu]" in _flag(install, "command") and "pip install -q -e ~/icl_ft" in _flag(install, "command")
  # The remote command is itself a shell line: parse it again to check the binary's argv survives quoting.
  remote = shlex.split(_flag(start, "command").split("nohup ", 1)[1].split(" >", 1)[0])
  assert remote == ["icl-ft-study", f"--config={config}", "--config.model.checkpoint=gs://bucket/ckpt",
                    "--config.run_name=two words"]
  assert "ICL_FT_MULTIHOST=1" in _flag(start, "command")
  assert "--worker=0" in logs


def test_queued_spot_create_and_delete():
  create, describe, delete = _commands("create", "delete", *POD, "--spot", "--queued")
  assert create[3:6] == ["queued-resources", "create", "icl-ft-qr"]
  assert _flag(create, "node-id") == "icl-ft" and _flag(create, "runtime-version") == "tpu-ubuntu2204-base"
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
