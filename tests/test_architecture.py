"""The layout's rules, read from the imports (``ast``): what each part of the project may depend on.

An import counts wherever it is written (module top or inside a function) and through other project modules.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"superserve": ROOT / "backend" / "superserve", "superserve_bench": ROOT / "bench" / "superserve_bench"}
ADAPTER = ROOT / "model_repository" / "superserve" / "1" / "model.py"
CLIENT = ROOT / "client"


def _module_files() -> dict[str, Path]:
    files = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    files["<model.py>"] = ADAPTER
    for path in CLIENT.glob("*.py"):
        files[f"<client>.{path.stem}"] = path
    return files


FILES = _module_files()


def _imports(module: str) -> set[str]:
    """Every module named by an import statement in ``module`` (relative imports resolved)."""
    path = FILES[module]
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return names


def _ours(name: str) -> str | None:
    """The project module an imported name refers to (its longest known prefix), if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in FILES:
            return candidate
    return None


@lru_cache(maxsize=None)
def _named(module: str) -> frozenset[str]:
    """Project modules ``module``'s imports name."""
    return frozenset(filter(None, (_ours(n) for n in _imports(module)))) - {module}


@lru_cache(maxsize=None)
def _direct(module: str) -> frozenset[str]:
    """Project modules importing ``module`` runs: those it names, and the packages that hold them."""
    deps = set()
    for name in _named(module):
        parts = name.split(".")
        deps.update(".".join(parts[:end]) for end in range(1, len(parts) + 1) if ".".join(parts[:end]) in FILES)
    return frozenset(deps - {module})


def _reachable(module: str, step=_direct) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dep in step(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _third_party(module: str) -> set[str]:
    """Top-level packages outside the project and the standard library that ``module`` imports, directly."""
    tops = {n.split(".")[0] for n in _imports(module) if _ours(n) is None}
    return {t for t in tops if t not in sys.stdlib_module_names and t != "__future__"}


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_scheduler_imports_nothing_of_the_supernet_the_serving_core_the_build_or_triton():
    for module in FILES:
        if _in(module, "superserve.scheduler"):
            outside = {m for m in _reachable(module) if not _in(m, "superserve.scheduler") and m != "superserve"}
            assert not outside, (module, outside)
            assert not _third_party(module) & {"torch", "triton_python_backend_utils", "tritonclient"}, module


def test_the_supernet_knows_no_server_and_no_scheduler():
    for module in FILES:
        if _in(module, "superserve.supernet"):
            bad = {m for m in _reachable(module) if _in(m, "superserve.serving", "superserve.scheduler")}
            assert not bad, (module, bad)


def test_the_serving_core_knows_no_benchmark_no_build_and_no_runtime():
    for module in FILES:
        if _in(module, "superserve.serving"):
            bad = {m for m in _reachable(module) if _in(m, "superserve_bench", "superserve.build", "superserve.runtime")}
            assert not bad, (module, bad)


def test_the_build_knows_no_benchmark_and_no_runtime():
    # it may use serving's config and Triton contract to write a model that serves, but not run a server
    for module in FILES:
        if _in(module, "superserve.build"):
            bad = {m for m in _reachable(module) if _in(m, "superserve_bench", "superserve.runtime")}
            assert not bad, (module, bad)


def test_every_module_lives_in_the_folder_of_its_job():
    loose = {m for m in FILES if m.startswith("superserve.") and m.count(".") == 1}
    jobs = {"superserve.supernet", "superserve.scheduler", "superserve.serving", "superserve.build",
            "superserve.runtime"}
    assert loose == jobs, loose - jobs


def test_the_triton_adapter_imports_only_the_serving_core_and_the_artefact_loader():
    named = _named("<model.py>")
    assert named and all(_in(m, "superserve.serving", "superserve.supernet.artefacts") for m in named), named


def test_the_client_examples_need_only_tritonclient_and_numpy():
    for module in FILES:
        if module.startswith("<client>."):
            assert not {m for m in _reachable(module) if not m.startswith("<client>.")}, module
            # Pillow only where an image file is read (image models); "classify" is the examples' shared module
            assert _third_party(module) <= {"tritonclient", "numpy", "PIL", "classify"}, module


def test_nothing_imports_the_benchmarks_and_the_runtime_knows_none():
    for module in FILES:
        if not _in(module, "superserve_bench"):
            assert not {m for m in _direct(module) if _in(m, "superserve_bench")}, module
    for runtime in (m for m in FILES if _in(m, "superserve.runtime")):
        assert not {m for m in _reachable(runtime) if _in(m, "superserve_bench", "superserve.build")}, runtime


def test_no_module_imports_itself_through_others():
    # a package importing its own modules is how packages work; modules naming each other in a circle is not
    cycles = [m for m in FILES if m in _reachable(m, _named)]
    assert not cycles, cycles


@pytest.mark.parametrize("module", ["superserve.serving.core", "<model.py>", "<client>.classify"])
def test_the_import_reader_sees_imports(module):
    assert _imports(module)  # guards the rules above against a reader that silently finds nothing
