"""``make serve``: set up the Triton home from the wheel and run tritonserver on the model repository.

    python -m superserve.runtime.serve setup               # assemble the Triton home (once)
    python -m superserve.runtime.serve serve [--no-restart] [tritonserver flags...]
    python -m superserve.runtime.serve perf-env            # LD_LIBRARY_PATH for perf_analyzer

``serve`` binds 127.0.0.1 and runs tritonserver under a supervisor that restarts it if a Python stub dies
(an upstream Triton bug); ``--no-restart`` execs plain tritonserver instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .supervisor import Supervisor
from .tritonenv import REPO_ROOT, ensure_triton_home, perf_analyzer_env, server_command, server_env, start_server

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="assemble the Triton home from the wheel")
    serve = sub.add_parser("serve", help="run tritonserver in the foreground, restarted if a Python stub dies")
    serve.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    serve.add_argument("--http-port", type=int, default=int(os.environ.get("HTTP_PORT", 8000)))
    serve.add_argument("--grpc-port", type=int, default=int(os.environ.get("GRPC_PORT", 8001)))
    serve.add_argument("--metrics-port", type=int, default=int(os.environ.get("METRICS_PORT", 8002)))
    serve.add_argument("--address", default=os.environ.get("BIND_ADDRESS", "127.0.0.1"),
                       help="address to bind; anything but loopback exposes the server (see README, Security)")
    serve.add_argument("--no-restart", action="store_true",
                       help="exec tritonserver itself: a dead Python stub then stays dead (Triton's own behaviour)")
    sub.add_parser("perf-env", help="print the LD_LIBRARY_PATH perf_analyzer needs")
    args, extra = p.parse_known_args(argv)
    home = ensure_triton_home()
    if args.cmd == "setup":
        print(f"Triton home ready at {home.root}")
    elif args.cmd == "perf-env":
        print(perf_analyzer_env(home)["LD_LIBRARY_PATH"])
    elif args.no_restart:
        cmd = server_command(home, args.model_repository.resolve(), args.http_port, args.grpc_port,
                             args.metrics_port, args.address, extra)
        os.execve(cmd[0], cmd, server_env(home))
    else:
        ports = (args.http_port, args.grpc_port, args.metrics_port)
        supervisor = Supervisor(lambda: start_server(args.model_repository, None, extra=extra, ports=ports,
                                                     address=args.address))
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: supervisor.stop())
        sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
