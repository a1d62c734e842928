"""launch_tpu.sh: the gcloud commands it prints for a pod, and its argument errors.

The remote commands of `run` and `copy` are also executed here, in a fake home directory, to
check what the workers would do: the binary's argv after two rounds of shell quoting, that the
ssh command returns at once while the binary keeps running, that each run gets its own log, and
that a copy replaces the code but keeps what the workers made next to it (data/, results/).
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

from icl_ft.config import checks
from icl_ft.scale import topologies
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
  assert checks.validate(config, require_inputs=True) == "train"
  assert config.mesh.fsdp == topologies.TOPOLOGIES["v5p-32"].chips


def test_pod_commands_run_on_every_worker():
  """A 4-worker v5p-32: every worker gets the code, the install and the same binary command."""
  assert topologies.TOPOLOGIES["v5p-32"].hosts == 4
  config = "configs/gemma.py:train,gemma2_2b,v5p-32,semantic_structure"
  overrides = ["--config.model.checkpoint=/home/me/gcs/gemma/gemma2-2b",
               "--config.model.tokenizer=/home/me/gcs/gemma/tokenizer.model",
               "--config.workdir=/home/me/gcs/runs/it's a dir"]  # quotes and spaces survive
  commands = _commands("all", *POD, "--spot", "--binary", "icl-ft-train", "--config", config, "--",
                       *overrides)
  create, archive, scp, untar, install, start, logs = commands
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "icl-ft"
  assert _flag(create, "accelerator-type") == "v5p-32" and "--spot" in create
  assert _flag(create, "version") == topologies.TOPOLOGIES["v5p-32"].runtime_version
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
  assert checks.validate(_config_with_overrides(remote[1:]), require_inputs=True) == "train"
  assert "ICL_FT_MULTIHOST=1" in _flag(start, "command")
  assert logs[3:5] == ["tpu-vm", "ssh"] and "--worker=0" in logs
  assert "~/icl_ft-logs/latest.log" in _flag(logs, "command")


def _worker_home(tmp_path, binary: str, script: str):
  """A fake worker home: ~/icl_ft, a venv whose activate puts `binary` (running `script`) on PATH."""
  home = tmp_path / "home"
  (home / "icl_ft").mkdir(parents=True)
  (home / "venv" / "bin").mkdir(parents=True)
  (home / "venv" / "bin" / "activate").write_text('export PATH="$HOME/venv/bin:$PATH"\n')
  path = home / "venv" / "bin" / binary
  path.write_text(script)
  path.chmod(0o755)
  return home


def test_run_command_on_a_worker(tmp_path):
  """The remote `run` line, executed by bash in a fake home: argv, environment, returns at once."""
  home = _worker_home(tmp_path, "icl-ft-eval",
                      f"#!{sys.executable}\n"
                      "import json, os, sys, time\n"
                      "print('started', flush=True)\n"
                      "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
                      "'multihost': os.environ.get('ICL_FT_MULTIHOST')}, "
                      "open(os.path.expanduser('~/ran.json'), 'w'))\n"
                      "time.sleep(6)\n"
                      "print('finished')\n")
  args = ["--config.run=a b", "--config.datasets=data/x,data/y", "--config.model.tokenizer=$HOME/t;1"]
  launched = _launch("--print", "run", *POD, "--binary", "icl-ft-eval", "--config", "configs/eval.py:icl",
                     "--", *args)
  (start,) = [shlex.split(line) for line in launched.stdout.splitlines()]
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
  # The log of this run: its own file, named on stderr, and the newest (latest.log).
  (log,) = re.findall(r"log in ~/(icl_ft-logs/\S+\.log) on every worker", launched.stderr)
  assert "started" in (home / log).read_text()
  assert (home / "icl_ft-logs" / "latest.log").resolve() == (home / log).resolve()


def test_each_run_gets_its_own_log(tmp_path):
  """Two runs on one worker: two log files, the first one untouched, latest.log the second."""
  home = _worker_home(tmp_path, "icl-ft-study", "#!/bin/sh\necho \"run $*\"\n")
  env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
  logs = []
  for name in ("first", "second"):
    (start,) = _commands("run", *POD, "--config", "configs/study.py", "--", f"--config.run={name}")
    subprocess.run(["bash", "-c", _flag(start, "command")], env=env, check=True, timeout=5)
    (log,) = re.findall(r"> ~/(icl_ft-logs/\S+\.log) ", _flag(start, "command"))
    logs.append(home / log)
  assert logs[0] != logs[1]
  for log, name in zip(logs, ("first", "second")):
    for _ in range(50):
      if log.exists() and log.read_text():
        break
      time.sleep(0.1)
    assert log.read_text() == f"run --config=configs/study.py --config.run={name}\n"
  assert (home / "icl_ft-logs" / "latest.log").resolve() == logs[1].resolve()
  assert not (home / "icl_ft.log").exists()


def _worker_with_data(home: Path) -> Path:
  """A worker's ~/icl_ft after an earlier copy: generated data and results beside stale code."""
  tree = home / "icl_ft"
  for rel, text in {"data/celebrities/train.jsonl": "{}\n", "results/run/summary.json": "{}",
                    "icl_ft/stale_module.py": "# deleted from the repository since\n",
                    "configs/data.py": "# an old version\n"}.items():
    (tree / rel).parent.mkdir(parents=True, exist_ok=True)
    (tree / rel).write_text(text)
  return tree


def test_copy_syncs_the_code_and_keeps_the_data(tmp_path):
  """The archive route run for real: HEAD's code replaces the old, data/ and results/ stay."""
  home = tmp_path / "home"
  tree = _worker_with_data(home)
  archive, scp, untar = _commands("copy", *POD)
  # The printed archive command, written where scp would put it on the worker.
  out = archive.index("-o") + 1
  subprocess.run([*archive[:out], str(home / "icl_ft.tar.gz"), *archive[out + 1:]], check=True)
  assert scp[6] == "icl-ft:~/icl_ft.tar.gz"
  subprocess.run(["bash", "-c", _flag(untar, "command")], check=True, timeout=60,
                 env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
  assert (tree / "data/celebrities/train.jsonl").read_text() == "{}\n"
  assert (tree / "results/run/summary.json").read_text() == "{}"
  assert not (tree / "icl_ft/stale_module.py").exists()
  head = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:configs/data.py"], capture_output=True,
                        text=True, check=True).stdout
  assert (tree / "configs/data.py").read_text() == head
  assert (tree / "launch_tpu.sh").exists() and (tree / "icl_ft/scale/topologies.py").exists()


@pytest.mark.parametrize(
    "given, gcloud_type, version",
    [("v4-8", "v4-8", "tpu-ubuntu2204-base"), ("v4-32", "v4-32", "tpu-ubuntu2204-base"),
     ("v5e-8", "v5litepod-8", "v2-alpha-tpuv5-lite"), ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
     ("v5p-8", "v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v6e-8", "v2-alpha-tpuv6e"),
     ("v6e-256", "v6e-256", "v2-alpha-tpuv6e")])
def test_every_generation_gets_its_runtime(given, gcloud_type, version):
  """The documented runtime of each generation (cloud.google.com/tpu/docs/runtimes), v5e as v5litepod."""
  pod = [a if a != "v5p-32" else given for a in POD]
  for queued in ([], ["--queued"]):
    create = _commands("create", *pod, *queued)[0]
    assert _flag(create, "accelerator-type") == gcloud_type
    assert _flag(create, "runtime-version" if queued else "version") == version
  assert topologies.RUNTIME_VERSIONS[gcloud_type.rsplit("-", 1)[0]] == version
  # The script's table and icl_ft.scale.topologies's are the same (v5e being an alias of v5litepod).
  script = {name: v for names, v in re.findall(r"^    ([\w|]+)\).*default_version=([\w-]+)", SCRIPT.read_text(), re.M)
            for name in names.split("|") if name != "v5e"}
  assert script == topologies.RUNTIME_VERSIONS


@pytest.mark.parametrize("topology", sorted(topologies.TOPOLOGIES))
def test_runtime_version_follows_the_accelerator_type(topology):
  topo = topologies.TOPOLOGIES[topology]
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


def _git(*args: str, cwd: Path) -> None:
  subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                 capture_output=True)


def test_clone_instead_of_copy(tmp_path):
  """--repo: the worker's ~/icl_ft follows REF (branch or tag) in place; data/ and results/ stay."""
  src = tmp_path / "src"
  (src / "configs").mkdir(parents=True)
  _git("init", "--quiet", "-b", "main", cwd=src)
  (src / "configs" / "data.py").write_text("# v1\n")
  (src / "old.py").write_text("")
  _git("add", ".", cwd=src)
  _git("commit", "--quiet", "-m", "v1", cwd=src)
  _git("tag", "v1", cwd=src)
  (src / "configs" / "data.py").write_text("# v2\n")
  _git("rm", "--quiet", "old.py", cwd=src)
  _git("commit", "--quiet", "-am", "v2", cwd=src)
  home = tmp_path / "home"
  tree = _worker_with_data(home)
  env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
  for ref, version in (("v1", "# v1\n"), ("main", "# v2\n")):
    (clone,) = _commands("copy", *POD, "--repo", str(src), "--ref", ref)
    subprocess.run(["bash", "-c", _flag(clone, "command")], env=env, check=True, timeout=60,
                   capture_output=True)
    assert (tree / "configs" / "data.py").read_text() == version
    assert (tree / "old.py").exists() == (ref == "v1")
    assert (tree / "data/celebrities/train.jsonl").read_text() == "{}\n"
    assert (tree / "results/run/summary.json").read_text() == "{}"


def test_environment_variables_stand_in_for_flags():
  env = {"PATH": "/usr/bin:/bin", "TPU_NAME": "n", "TPU_ZONE": "z", "TPU_PROJECT": "p"}
  result = _launch("--print", "delete", env=env)
  assert result.returncode == 0, result.stderr
  assert shlex.split(result.stdout)[5] == "n"


def test_uncommitted_config_is_refused_before_copy(tmp_path):
  """copy ships HEAD: a config only in the working tree would be missing on the workers."""
  # At the root, hidden: nothing globs it (tests/test_configs.py globs configs/*.py).
  config = ROOT / f".uncommitted_{tmp_path.name}.py"
  config.write_text("")
  try:
    result = _launch("--print", "copy", "run", *POD, "--config", f"{config.relative_to(ROOT)}:x")
    assert result.returncode == 2 and result.stdout == ""
    assert "is not committed: copy ships HEAD" in result.stderr
    assert _launch("--print", "run", *POD, "--config", f"{config.relative_to(ROOT)}:x").returncode == 0
  finally:
    config.unlink()


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
        (["create", *POD[:6], "--accelerator-type", "v3-8"], "unknown accelerator type 'v3-8'"),
        (["create", *POD[:6], "--accelerator-type", "v5-8"], "unknown accelerator type 'v5-8'"),
        (["create", *POD[:6], "--accelerator-type", "v5p"], "unknown accelerator type 'v5p'"),
        (["run", *POD, "--config", "configs/nope.py:x"], "config file 'configs/nope.py' not found"),
        (["run", *POD, "--config", "configs"], "config file 'configs' not found"),
    ],
)
def test_bad_arguments_fail_with_one_line(args, message):
  result = _launch("--print", *args, env={"PATH": "/usr/bin:/bin"})
  assert result.returncode == 2
  assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert result.stdout == ""
