"""What every icl-ft binary shares: one `--config` flag, flag parsing, exit statuses, errors.

Each binary is `cli.run(execute, ...)` where `execute(config) -> int` holds its logic (and is
what tests and notebooks call in-process). The `--config` flag is defined inside `run`, never
at import, so several binaries can be imported into one process.

Exit statuses: 0 done; 1 bad input or a failed run (`execute` prints one `error: ...` line);
2 bad flags (one `error: ...` line from here).

No traceback reaches the user: a missing config file or a config file's own error (e.g. an
unknown `:variant`) is one line naming the file; an exception `execute` does not handle (a
corrupted file read by a library, a full disk) is one line naming its type, and orbax's
logged copies of an error it also raises (and the unraisable errors of its writes still in
flight, and anything printed while shutting down after the error line) are dropped.
ICL_FT_TRACEBACK=1 shows tracebacks.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags


def one_line(e: BaseException) -> str:
  """The exception's message on one line (its type name when it has none)."""
  return " ".join(str(e).split()) or type(e).__name__


def fail(e: BaseException | str, status: int = 1) -> int:
  """Prints one `error: ...` line on stderr and returns `status`."""
  message = e if isinstance(e, str) else one_line(e)
  print(f"error: {message}", file=sys.stderr)
  return status


def _unknown_field(e: BaseException, argv: list[str]) -> str:
  """Names the `--config.<field>` override a KeyError/AttributeError from config_flags is about."""
  inner: Any = e
  while inner.args and isinstance(inner.args[0], BaseException):
    inner = inner.args[0]
  detail = one_line(inner).replace("'", "").replace('"', "")
  given = [a.split("=", 1)[0] for a in argv[1:]
           if a.startswith("--config.") and a.split("=", 1)[0].rsplit(".", 1)[-1] in detail]
  return given[0] if given else detail


HELP_FLAGS = ("-h", "--help", "-?", "--helpshort")


def _config_fields(node: Any, prefix: str = "") -> list[str]:
  """`name = default` for every leaf field of a ConfigDict, dotted, in definition order."""
  lines = []
  for key, value in node.items():
    if hasattr(value, "items"):
      lines += _config_fields(value, f"{prefix}{key}.")
    else:
      lines.append(f"  --config.{prefix}{key}={value!r}" + (" (unset)" if value is None else ""))
  return lines


def _load_config(path: str, arg: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `path` (as given, else under this checkout's root)."""
  candidates = [Path(path), Path(__file__).resolve().parents[2] / path]
  found = next(c for c in candidates if c.is_file())
  module_spec = importlib.util.spec_from_file_location("icl_ft_help_config", found)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def help_text(doc: str, config_file: str, argv: list[str],
              default_config: Callable[[], ml_collections.ConfigDict] | None = None) -> str:
  """A binary's --help: what it does (its module docstring) and its config's fields.

  The fields are those of the `--config` given in `argv`, else of `default_config()` (the
  package's default), else of `config_file`'s default.
  """
  given = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  spec = given or config_file.split("[", 1)[0]
  path, _, arg = spec.partition(":")
  arg = "" if arg.startswith("<") else arg
  out = [(doc or "").strip(), ""]
  try:
    if given is None and default_config is not None:
      config, path, arg = default_config(), f"the default config ({spec})", ""
    else:
      config = _load_config(path, arg)
  except Exception as e:  # pylint: disable=broad-except  # help must not fail on a bad config
    out.append(f"(config fields not shown: {spec}: {one_line(e)})")
  else:
    out.append(f"Config fields of {path}{':' + arg if arg else ''} with their defaults; override any with "
               "--config.<field>=VALUE:")
    out += _config_fields(config)
  out += ["", f"Flags: --config={config_file} (the config file[:argument]); --helpfull lists absl's flags."]
  return "\n".join(out)


TRACEBACK_ENV = "ICL_FT_TRACEBACK"


def _tracebacks_wanted() -> bool:
  return os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def config_file_error(argv: list[str]) -> str | None:
  """A one-line message if `--config`'s file does not exist (config_flags defers that error)."""
  for i, a in enumerate(argv[1:], start=1):
    if a.startswith("--config="):
      value = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    path = value.split(":", 1)[0]
    if path and not os.path.isfile(path):
      return f"config file {path} not found (--config={value})"
  return None


def _config_error_message(e: BaseException, argv: list[str]) -> str:
  """One line for a flag error; a config file's own exception without config_flags' traceback."""
  chain, inner = [], e
  while inner is not None and inner not in chain:
    chain.append(inner)
    inner = inner.__cause__ or inner.__context__
  if any(str(x).startswith("Error whilst parsing config file") for x in chain):
    given = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")]
    return f"{given[0] if given else '--config'}: {one_line(chain[-1])}"
  return one_line(e)


class _DropOrbaxTracebacks(logging.Filter):
  """Drops orbax's logged errors with a traceback: orbax raises the same error to the caller,
  which reports it as one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and record.exc_info
                and f"{os.sep}orbax{os.sep}" in (record.pathname or ""))


def _closed_loop_unraisable(unraisable: Any) -> bool:
  """TensorStore writes still in flight when orbax closes its event loop after a failed save
  (a full disk) report `RuntimeError: Event loop is closed` as unraisable, one per write."""
  value = getattr(unraisable, "exc_value", None)
  return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


def quiet_library_tracebacks() -> None:
  """Drops library tracebacks that repeat an error the binary reports as one line.

  Installs `_DropOrbaxTracebacks` on absl's logger (what orbax logs through) and a
  `sys.unraisablehook` that drops `_closed_loop_unraisable` reports (others are printed).
  """
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _DropOrbaxTracebacks) for f in logger.filters):
    logger.addFilter(_DropOrbaxTracebacks())
  # The binaries run no asyncio code of their own: what asyncio logs is orbax's writes
  # failing a second time ("exception was never retrieved").
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  previous = sys.unraisablehook

  def hook(unraisable: Any) -> None:
    if not _closed_loop_unraisable(unraisable):
      previous(unraisable)

  if not getattr(previous, "_icl_ft_quiet", False):
    hook._icl_ft_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _silence_stderr() -> None:
  """Sends what is written to stderr from now on to /dev/null (file descriptor 2 included)."""
  sys.stderr.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)


def run_execute(execute: Callable[[Any], int], config: Any) -> int:
  """`execute(config)`, with any exception it lets through as one `error:` line (status 1)."""
  try:
    return execute(config)
  except Exception as e:  # pylint: disable=broad-except
    if _tracebacks_wanted():
      raise
    return fail(f"{type(e).__name__}: {one_line(e)}")


def _has_config_flag(argv: list[str]) -> bool:
  return any(a == "--config" or a.startswith("--config=") for a in argv)


def run(execute: Callable[[Any], int], *, config_help: str, config_file: str,
        default_config: Callable[[], ml_collections.ConfigDict] | None = None) -> None:
  """Defines `--config`, parses argv, and exits with `execute(config)`'s status.

  `config_file` names the configs file in messages, e.g. "configs/train.py:<preset>".
  `default_config`: the config without `--config` (built by the package, so an installed
  binary needs no configs/ file); `--config.<field>=` overrides apply to it as to a file's.
  `--help` prints `help_text` (the binary module's docstring and its config's fields).
  """
  if any(a in HELP_FLAGS for a in sys.argv[1:]):
    print(help_text(sys.modules[execute.__module__].__doc__ or config_help, config_file,
                    sys.argv[1:], default_config))
    sys.exit(0)
  if default_config is not None and not _has_config_flag(sys.argv[1:]):
    holder = config_flags.DEFINE_config_dict("config", default_config(), config_help,
                                             lock_config=True)
  else:
    holder = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)

  def parse(argv: list[str]) -> list[str]:
    missing = config_file_error(argv)
    if missing:
      sys.exit(fail(missing, 2))
    try:
      return flags.FLAGS(argv)
    except (KeyError, AttributeError) as e:  # config_flags: override of a field the config lacks
      configs = config_file.split(":")[0].rstrip("[")  # "configs/study.py[:variant]"
      sys.exit(fail(f"unknown config field {_unknown_field(e, argv)}; see {configs}", 2))
    except (flags.Error, ValueError, TypeError, OSError) as e:
      sys.exit(fail(_config_error_message(e, argv), 2))

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      sys.exit(fail(f"unexpected arguments {argv[1:]}", 2))
    if holder.value is None:
      sys.exit(fail(f"--config is required: --config={config_file}", 2))
    # Warnings and errors only (JAX's INFO lines, e.g. about absent TPU libraries, are noise).
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)
    quiet = not _tracebacks_wanted()
    if quiet:
      quiet_library_tracebacks()
    status = run_execute(execute, holder.value)
    if status and quiet:
      # The error is reported; what libraries print while shutting down after it (writes
      # still in flight failing again) would only repeat it.
      _silence_stderr()
    sys.exit(status)

  app.run(main, flags_parser=parse)
