"""The package's shape (docs/architecture.md): layers, no import cycle, imports at the top, sizes.

Read from the source with `ast` (nothing is imported), so a violation names the file and line.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "icl_ft"

# Lowest first. A module imports only from its own layer or lower ones (docs/architecture.md).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("icl_ft", "icl_ft.fileio", "icl_ft.config", "icl_ft.config.schema", "icl_ft.sharding")),
    ("datasets", ("icl_ft.datasets",)),
    ("model", ("icl_ft.model",)),
    ("pipeline", ("icl_ft.pipeline",)),
    ("inference", ("icl_ft.inference",)),
    ("evaluation", ("icl_ft.evaluation",)),
    ("train", ("icl_ft.train",)),
    ("augment", ("icl_ft.augment",)),
    ("pretrain", ("icl_ft.pretrain",)),
    ("scale", ("icl_ft.scale",)),
    ("checks", ("icl_ft.config.checks",)),  # validates with the vocabularies of what it checks
    ("study", ("icl_ft.study",)),
    ("bin", ("icl_ft.bin",)),
)

# Imports allowed inside functions: heavy dependencies that only one optional path needs.
OPTIONAL_IMPORTS = {
    "matplotlib": "figures only (evaluation/plots)",
    "gguf": "the Gemma 3 270M GGUF checkpoint only (the `gemma3` extra)",
    "tensorboardX": "TensorBoard event files only when `log.tensorboard` is on",
    "tensorflow_datasets": "the pipeline's TFDS source only (seconds to import)",
    "icl_ft.datasets.tfds_builders": "imports tensorflow_datasets (the TFDS source only)",
    "jax._src": "a private JAX module (the compilation cache reset), guarded: it may move",
}

MAX_LINES = 450
LONG_FILE_MARK = "Longer than 450 lines:"


@dataclasses.dataclass(frozen=True)
class Import:
  module: str  # the importing module
  target: str  # the imported module (icl_ft modules resolved to a module of the package)
  line: int
  local: bool  # inside a function


def _module_names() -> dict[str, pathlib.Path]:
  names = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    names[".".join(parts)] = path
  return names


MODULES = _module_names()


def _imports(module: str, path: pathlib.Path) -> list[Import]:
  tree = ast.parse(path.read_text(), filename=str(path))
  functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  local_nodes = {id(n) for f in functions for n in ast.walk(f)}
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                 for a in node.names]
    else:
      continue
    for target in targets:
      out.append(Import(module, target, node.lineno, id(node) in local_nodes))
  return out


IMPORTS = [imp for name, path in MODULES.items() for imp in _imports(name, path)]


def _layer(module: str) -> int:
  best, index = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
        best, index = len(prefix), i
  assert index is not None, f"{module} is in no layer of LAYERS"
  return index


def _internal(imp: Import) -> bool:
  return imp.target == "icl_ft" or imp.target.startswith("icl_ft.")


def test_every_module_has_a_layer():
  for module in MODULES:
    _layer(module)


def test_no_module_imports_a_higher_layer():
  upward = [f"{MODULES[i.module].relative_to(PACKAGE.parent)}:{i.line}: {i.module} "
            f"({LAYERS[_layer(i.module)][0]}) imports {i.target} ({LAYERS[_layer(i.target)][0]})"
            for i in IMPORTS if _internal(i) and _layer(i.target) > _layer(i.module)]
  assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_import_cycle():
  graph = collections.defaultdict(set)
  for i in IMPORTS:
    if _internal(i) and i.target in MODULES and i.target != i.module:
      graph[i.module].add(i.target)
  # Tarjan's strongly connected components: any component of more than one module is a cycle.
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in sorted(MODULES):
    if v not in index:
      visit(v)
  assert not cycles, f"import cycles: {cycles}"


def test_function_local_imports_only_for_optional_dependencies():
  local = [f"{MODULES[i.module].relative_to(PACKAGE.parent)}:{i.line}: {i.target}"
           for i in IMPORTS if i.local and i.target.split(".")[0] not in OPTIONAL_IMPORTS
           and i.target not in OPTIONAL_IMPORTS]
  assert not local, ("imports inside functions (move them to the top, or name the optional "
                     "dependency in OPTIONAL_IMPORTS):\n" + "\n".join(local))


def test_files_are_short_or_say_why():
  long = []
  for path in MODULES.values():
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    if lines > MAX_LINES and LONG_FILE_MARK not in doc:
      long.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
  assert not long, (f"files over {MAX_LINES} lines without '{LONG_FILE_MARK} <reason>' in "
                    "their docstring:\n" + "\n".join(long))


def test_checks_catch_what_they_guard(tmp_path):
  """The checks above fail on a planted upward import and a planted cycle."""
  fake = [Import("icl_ft.datasets.x", "icl_ft.model.y", 1, False)]
  assert any(_layer(i.target) > _layer(i.module) for i in fake)
  with pytest.raises(AssertionError, match="in no layer"):
    _layer("elsewhere.module")
