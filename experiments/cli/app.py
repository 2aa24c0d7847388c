"""``iclwb app``: start the Streamlit app on a results folder, bound to localhost.

    iclwb app [--results DIR] [--port N] [--host ADDR] [any streamlit option, e.g. --server.port 8765]

Streamlit runs as a subprocess on ``app/main.py`` (found beside this package); nothing imports
``app``. Options this command does not know are passed to ``streamlit run`` unchanged. The
results folder reaches the app both after ``--`` and as ``ICLWB_RESULTS`` in its environment, so
a session's first visit to any page URL reads it. The address printed is the one the server binds:
``--port``, else ``--server.port``/``--server.address`` among the passed options, else the first
free port from 8501 (passed to Streamlit explicitly).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"


class _PassthroughParser(argparse.ArgumentParser):
    """Collects options it does not know into ``streamlit_args`` instead of failing."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        ns.streamlit_args = list(getattr(ns, "streamlit_args", []) or []) + [a for a in extras if a != "--"]
        return ns, []


def app_main_path() -> Path:
    if not APP_MAIN.is_file():
        raise FileNotFoundError(f"the app's entry point {APP_MAIN} is missing; reinstall the "
                                f"workbench from its source tree (pip install -e .)")
    return APP_MAIN


def streamlit_command(results: str | os.PathLike, port: int | None = None, host: str = "localhost",
                      extra: Sequence[str] = ()) -> list[str]:
    """The ``python -m streamlit run`` command line that ``iclwb app`` executes."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_main_path()),
           "--server.address", host, "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    if port is not None:
        cmd += ["--server.port", str(port)]
    cmd += list(extra)
    cmd += ["--", "--results", str(Path(results).expanduser().resolve())]
    return cmd


DEFAULT_PORT = 8501


def _option(extra: Sequence[str], name: str) -> str | None:
    """The value of streamlit option ``name`` (``--name V`` or ``--name=V``) in ``extra``; the last wins."""
    found = None
    for i, arg in enumerate(extra):
        if arg == name and i + 1 < len(extra):
            found = extra[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound now."""
    with socket.socket() as s:
        try:
            s.bind((host if host not in ("", "0.0.0.0") else "", port))
        except OSError:
            return False
    return True


def server_address(host: str, port: int | None, extra: Sequence[str] = ()) -> tuple[str, int, bool]:
    """Where the server will listen: (host, port, whether the port must be passed to Streamlit).
    ``port`` wins, then ``--server.port`` / ``--server.address`` in ``extra``, then the first free
    port from 8501 (which is then passed explicitly, so the printed address is the real one)."""
    host = _option(extra, "--server.address") or host
    if port is not None:
        return host, int(port), False
    given = _option(extra, "--server.port")
    if given is not None:
        try:
            return host, int(given), False
        except ValueError:
            raise SystemExit(f"iclwb app: --server.port {given!r} is not a port number") from None
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + 100):
        if port_free(host, candidate):
            return host, candidate, True
    return host, DEFAULT_PORT, False


def app_env(results: str | os.PathLike) -> dict[str, str]:
    """The server's environment: this one plus ``ICLWB_RESULTS`` (read by app/main.py)."""
    return {**os.environ, "ICLWB_RESULTS": str(Path(results).expanduser().resolve())}


def _cmd_app(args: argparse.Namespace) -> int:
    host, port, pass_port = server_address(args.host, args.port, args.streamlit_args)
    cmd = streamlit_command(args.results, args.port if args.port is not None else (port if pass_port else None),
                            args.host, args.streamlit_args)
    results = Path(args.results)
    if not results.is_dir():
        print(f"iclwb app: note: results folder {results} does not exist yet; the Results page "
              f"will say so (run `iclwb demo` to fill it)", file=sys.stderr)
    print(f"iclwb app: starting Streamlit at http://{host}:{port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    return run_server(cmd, env=app_env(args.results))


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def run_server(cmd: Sequence[str], grace_s: float = 10.0, env: dict[str, str] | None = None) -> int:
    """Run the server ``cmd`` as a child and wait for it; Ctrl-C, SIGTERM or SIGHUP to this
    launcher stops the child too (terminate, then kill after ``grace_s``), so no server is left
    behind when the launcher is stopped."""

    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not started:  # arrived while the child was being started: acted on once it exists
            pending.append(signum)
            return
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    proc = subprocess.Popen(list(cmd), env=env)
    started.append(proc)
    try:
        if pending:
            raise _Stop(pending[0])
        return proc.wait()
    except (KeyboardInterrupt, _Stop) as stop:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130 if isinstance(stop, KeyboardInterrupt) else 128 + stop.signum
    finally:
        if proc.poll() is None:  # any other way out of the wait: never leave the server running
            proc.kill()
            proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``iclwb app`` to the CLI."""
    p = subparsers.add_parser(
        "app", help="start the Streamlit app (bound to localhost)",
        description="Start the ICL Workbench app. Unknown options (e.g. --server.port 8765, "
                    "--theme.base dark) are passed to `streamlit run`.",
    )
    p.__class__ = _PassthroughParser
    p.add_argument("--results", default="results/demo",
                   help="results folder the Results, Circuit and ICL-vs-GD pages read (default: "
                        "results/demo, where `iclwb demo` writes)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default: --server.port if given, else the first free port from 8501)")
    p.add_argument("--host", default="localhost",
                   help="address to bind (default localhost; 0.0.0.0 exposes the app to the network)")
    p.set_defaults(func=_cmd_app, streamlit_args=[])
