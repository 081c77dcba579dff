"""Run the real Triton 2.51 server that the nvidia-pytriton wheel bundles, without Docker or a GPU.

Assembles a Triton home from the wheel (once) and starts ``tritonserver`` on it, for ``make serve``
(``superserve.runtime.serve``), the integration tests and the benchmarks, and gives perf_analyzer its two libraries.
A server started here dies with the process that started it, even if that process is killed outright.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TritonHome", "ensure_triton_home", "server_command", "server_env", "perf_analyzer_env", "REPO_ROOT",
           "ServerProcess", "start_server", "free_ports", "python_stub_states"]

REPO_ROOT = Path(__file__).resolve().parents[3]
# the wheel's layout, copied: its binaries find their libraries at ../../nvidia_pytriton.libs (RPATH $ORIGIN), so
# the copy runs with no LD_LIBRARY_PATH and nothing of the venv
DEFAULT_HOME = REPO_ROOT / ".tools" / "triton" / "pytriton" / "tritonserver"
HEADER_FORWARD = "x-slo.*"


@dataclass(frozen=True)
class TritonHome:
    root: Path
    libs: Path  # the wheel's bundled shared libraries
    extra_libs: Path  # soname links for perf_analyzer

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed in {sys.prefix}: run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def ensure_triton_home(home: Path = DEFAULT_HOME) -> TritonHome:
    """Copy Triton and its libraries out of the wheel, in the wheel's layout, and add the Python stub for this
    interpreter (idempotent). The copy needs nothing of the venv to run: a server started from it with a bare
    environment serves models that bring their own Python environment (``superserve.runtime.export``)."""
    wheel = _package_dir("pytriton") / "tritonserver"
    site = Path(sysconfig.get_paths()["purelib"])
    wheel_libs = site / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    home = Path(home)
    libs = home.parents[1] / "nvidia_pytriton.libs"
    ready = home / ".ready"
    if not ready.is_file() or ready.read_text() != f"{wheel}:{version}":
        for old in (home, libs):
            if old.exists():
                shutil.rmtree(old)
        shutil.copytree(wheel, home, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
        shutil.copytree(wheel_libs, libs, copy_function=_link_or_copy)
        shutil.copy2(stub, home / "backends" / "python" / "triton_python_backend_stub")
        ready.write_text(f"{wheel}:{version}")
    extra = home.parents[2] / "lib"
    extra.mkdir(parents=True, exist_ok=True)
    links = {"libb64.so.0d": glob.glob(str(libs / "libb64-*.so.0d")),
             "libcudart.so.12": glob.glob(str(site / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12"))}
    for name, found in links.items():
        target = extra / name
        if found and not target.exists():
            target.symlink_to(found[0])
    return TritonHome(home, libs, extra)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the venv and the home share a file system (no second 115 MB), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def server_env(home: TritonHome) -> dict[str, str]:
    """Environment for tritonserver: this venv's Python first on PATH, where the stub of a model without an
    ``EXECUTION_ENV_PATH`` finds its packages (the server itself needs nothing of it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def perf_analyzer_env(home: TritonHome) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(home.extra_libs), env.get("LD_LIBRARY_PATH")]))
    return env


def server_command(home: TritonHome, model_repository: Path, http_port: int = 8000, grpc_port: int = 8001,
                   metrics_port: int = 8002, address: str = "127.0.0.1", extra: list[str] | None = None) -> list[str]:
    """The tritonserver command line: local-only by default, header ``x-slo-ms`` forwarded as a parameter."""
    return [
        str(home.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={home.backends}",
        f"--http-address={address}", f"--http-port={http_port}",
        f"--grpc-address={address}", f"--grpc-port={grpc_port}",
        f"--metrics-address={address}", f"--metrics-port={metrics_port}",
        f"--http-header-forward-pattern={HEADER_FORWARD}",
        f"--grpc-header-forward-pattern={HEADER_FORWARD}",
        "--model-control-mode=none",
        "--exit-timeout-secs=15",
        "--log-verbose=0",
        *(extra or []),
    ]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class ServerProcess:
    """A tritonserver started by ``start_server`` (tests, benchmarks); ``stop`` sends SIGTERM."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path
    stubs_at_start: int = 0  # Python stub processes once every model was ready
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def live_stubs(self) -> int:
        return sum(state != "Z" for state in python_stub_states(self.process.pid).values())

    def dead_stubs(self) -> int:
        """Python stubs that have exited since the server became ready. Triton 2.51 neither restarts a dead
        stub nor marks its model unready (server#8604, #8841): the model then holds its requests forever."""
        return max(0, self.stubs_at_start - self.live_stubs())

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, up to ``timeout_s`` for a clean exit, then SIGKILL to whatever is left of the server's
        process group: tritonserver can exit (or be killed) before a Python stub has, which would orphan it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server runs in its own process group
        except ProcessLookupError:
            pass  # nothing of the group is left
        self.process.wait()
        return self.process.returncode


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """For the child between fork and exec: SIGKILL when the parent dies (the server then cannot outlive a
    supervisor killed outright; its Python stubs exit once they see it gone)."""
    def set_signal() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return set_signal


def start_server(model_repository: Path, log: Path | None, timeout_s: float = 180,
                 extra: list[str] | None = None, ports: tuple[int, int, int] | None = None,
                 address: str = "127.0.0.1", own_session: bool = True,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """Start tritonserver (on free loopback ports unless ``ports`` = http, grpc, metrics) and wait until
    every model is ready (polling). ``log`` None: the server writes to this process's stdout. ``env``: the
    server's whole environment (default ``server_env``).

    ``own_session`` False keeps the server in this process's session (its own process group still): with the
    kernel's autogroup scheduling, a session is one scheduling group, so a load generator on the same cores then
    competes with the server thread by thread instead of the two sessions splitting the cores between them."""
    import urllib.request

    home = ensure_triton_home()
    http, grpc, metrics = ports or free_ports(3)
    cmd = server_command(home, Path(model_repository).resolve(), http, grpc, metrics, address, extra)
    # its own process group (ServerProcess.stop kills the whole group), tied to this process's life
    group = dict(start_new_session=True) if own_session else dict(process_group=0)
    options = dict(env=server_env(home) if env is None else env, preexec_fn=_die_with_parent(os.getpid()), **group)
    if log is None:
        process = subprocess.Popen(cmd, **options)
    else:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **options)
    host = "127.0.0.1" if address in ("0.0.0.0", "::") else address
    server = ServerProcess(process, http, grpc, metrics, Path(log or os.devnull), host=host)
    tail = lambda: Path(log).read_text()[-4000:] if log is not None else "(its output is above)"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {process.returncode}:\n{tail()}")
        try:
            with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    server.stubs_at_start = server.live_stubs()
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"tritonserver not ready after {timeout_s} s:\n{tail()}")


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone. Linux /proc, like the server."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:  # FileNotFoundError, or ProcessLookupError when it is reaped between open() and read()
        return False
    return text[text.rindex(")") + 2] != "Z"


def python_stub_states(server_pid: int) -> dict[int, str]:
    """pid -> process state (``Z``: exited, not yet reaped) of the Python-backend stubs a tritonserver
    started, read from /proc (Linux, like the server itself)."""
    states = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue  # the process ended while we looked
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name.startswith("triton_python_b") and int(rest[1]) == server_pid:  # comm is cut at 15 chars
            states[int(stat.split("/")[2])] = rest[0]
    return states
