"""``make export-repo``: a model repository that any Triton 2.51 server can load, with the Python its models need.

    python -m superserve.runtime.export --out DIR [--repository model_repository ...] [MODEL ...]
    tritonserver --model-repository DIR/model_repository

Triton's Python backend runs a model's stub in the environment that the model's ``EXECUTION_ENV_PATH`` names:
it sources ``<env>/bin/activate`` and starts the stub with ``<env>/lib`` on the library path (python_backend
r24.10, ``stub_launcher.cc``; a directory is used in place, a ``.tar.gz`` is unpacked first). The export writes
``DIR/model_repository`` and, beside it (Triton takes every folder in a repository for a model), one such
environment, ``DIR/python_env``, holding this package (a wheel, also left in ``DIR/wheels``) and its runtime
dependencies at the pinned versions; every exported model points at it, so the server needs nothing of this
project's venv.

The environment is a virtual environment of the Python that runs the export: it runs on any machine that has
that Python at the same path (its ``pyvenv.cfg`` names it) and a Triton Python backend stub of the same version.
Anywhere else (the NGC container has its own Python), run the export there, or install the wheel it writes into
the server's Python (docs/own-supernet.md).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from .tritonenv import REPO_ROOT

__all__ = ["export", "exported_config", "ENV_NAME", "main"]

ENV_NAME = "python_env"
ENV_PARAMETER = "EXECUTION_ENV_PATH"
# Triton replaces this with the model's folder (python_be.cc), so the exported repository can move as a whole
ENV_PATH = f"$$TRITON_MODEL_DIRECTORY/../../{ENV_NAME}"
_ARTEFACTS_PARAMETER = re.compile(
    r'parameters\s*:?\s*\{\s*key:\s*"artefacts"\s*value:\s*\{\s*string_value:\s*"([^"]*)"\s*\}\s*\}\s*\n?')

# The venv's own activate names the folder it was made in; this one finds its folder when sourced (the stub
# launcher runs it with bash), so the exported repository can be copied anywhere.
_ACTIVATE = """\
# written by superserve.runtime.export: Triton's Python backend sources this before it starts a model's stub
VIRTUAL_ENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV
PATH="$VIRTUAL_ENV/bin:$PATH"
export PATH
unset PYTHONHOME PYTHONPATH
"""


def exported_config(text: str) -> str:
    """``config.pbtxt`` with ``EXECUTION_ENV_PATH`` set to the exported environment (any earlier value replaced)."""
    entry = re.compile(r'parameters\s*:?\s*\{\s*key:\s*"' + ENV_PARAMETER + r'"\s*value:\s*\{[^}]*\}\s*\}\s*\n?')
    text = entry.sub("", text)
    if not text.endswith("\n"):
        text += "\n"
    return (text + f"# the Python environment this model runs in (written by superserve.runtime.export)\n"
            f'parameters: {{ key: "{ENV_PARAMETER}" value: {{ string_value: "{ENV_PATH}" }} }}\n')


def artefacts_of(model: Path) -> Path:
    """The folder holding a model's SuperNet: version 1, or what a remote worker's ``artefacts`` parameter names
    (relative to the model's folder)."""
    found = _ARTEFACTS_PARAMETER.search((model / "config.pbtxt").read_text())
    return (model / (found.group(1) if found else "1")).resolve()


def built_models(repository: Path) -> list[Path]:
    """The model folders of ``repository`` whose SuperNet is built (its folder holds a ``profile.json``)."""
    return sorted(p.parent for p in repository.glob("*/config.pbtxt")
                  if (artefacts_of(p.parent) / "profile.json").is_file())


def _run(cmd: Sequence[str], what: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")


def make_environment(env: Path, wheels: Path, python: str = sys.executable, say=print) -> None:
    """A virtual environment at ``env`` with this package and its runtime dependencies, pinned by constraints.txt."""
    say(f"building the superserve wheel into {wheels}")
    with tempfile.TemporaryDirectory() as source:  # a clean copy: setuptools' build/ in the checkout may be stale
        for part in ("backend", "bench"):
            shutil.copytree(REPO_ROOT / part, Path(source) / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(REPO_ROOT / "pyproject.toml", source)
        _run([python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
              "-w", str(wheels), source], "building the wheel")
    wheel = max(wheels.glob("superserve-*.whl"), key=lambda p: p.stat().st_mtime)
    say(f"creating the Python environment {env} (torch, numpy, tritonclient; about a minute from pip's cache)")
    _run([python, "-m", "venv", str(env)], "creating the environment")
    pins = wheels / "pins.txt"  # requirements.txt as constraints (which may not name extras) + constraints.txt
    pins.write_text(re.sub(r"\[[^]]*\]", "", (REPO_ROOT / "requirements.txt").read_text()))
    _run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-c", str(pins), "-c", str(REPO_ROOT / "constraints.txt"), str(wheel)], "installing into the environment")
    (env / "bin" / "activate").write_text(_ACTIVATE)


def export(out: Path, repositories: Sequence[Path] = (REPO_ROOT / "model_repository",), models: Sequence[str] = (),
           python: str = sys.executable, say=print) -> list[Path]:
    """Copy the built models of ``repositories`` (those named in ``models``; all by default) to
    ``out/model_repository``, with one Python environment that they all run in; returns the model folders."""
    out = Path(out)
    found = [folder for repository in repositories for folder in built_models(Path(repository))]
    folders = [f for f in found if f.name in models] if models else found
    missing = sorted(set(models) - {f.name for f in folders})
    if missing or not folders:
        what = f"no built model named {', '.join(missing)}" if missing else "no built model"
        raise SystemExit(f"{what} in {', '.join(map(str, repositories))}: run `make model` (or `make ofa-model` "
                         "for your own SuperNet)")
    env, repository = out / ENV_NAME, out / "model_repository"
    for old in (env, repository):
        if old.exists():
            shutil.rmtree(old)
    repository.mkdir(parents=True)
    make_environment(env, out / "wheels", python, say)
    exported = []
    for folder in folders:
        target = repository / folder.name
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__", "*.log"))
        config = target / "config.pbtxt"
        text = config.read_text()
        artefacts = artefacts_of(folder)
        if artefacts != (folder / "1").resolve():  # a remote worker's SuperNet lives elsewhere: bring it along
            for item in artefacts.iterdir():
                if item.is_file() and item.suffix != ".py":
                    shutil.copy2(item, target / "1" / item.name)
            text = _ARTEFACTS_PARAMETER.sub("", text)
        config.write_text(exported_config(text))
        exported.append(target)
        say(f"exported {folder.name} -> {target}")
    return exported


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True,
                   help="folder to write to: model_repository/, python_env/ and wheels/ in it are replaced")
    p.add_argument("--repository", type=Path, action="append", dest="repositories",
                   help="a repository to export from, repeatable (default: model_repository; worker_repository "
                        "for a remote worker host)")
    p.add_argument("models", nargs="*", help="models to export (default: every built model)")
    args = p.parse_args(argv)
    exported = export(args.out, args.repositories or [REPO_ROOT / "model_repository"], args.models)
    print(f"{len(exported)} model(s) exported; serve them with any Triton 2.51 server whose Python backend stub is "
          f"Python {sys.version_info.major}.{sys.version_info.minor}:\n"
          f"  tritonserver --model-repository {(args.out / 'model_repository').resolve()}")


if __name__ == "__main__":
    main()
