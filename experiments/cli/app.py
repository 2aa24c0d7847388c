"""``iclwb app``: start the Streamlit app on a results folder, bound to localhost.

    iclwb app [--results DIR] [--port N] [--host ADDR] [any streamlit option, e.g. --server.port 8765]

Streamlit runs as a subprocess on ``app/main.py`` (found beside this package); nothing imports
``app``. Options this command does not know are passed to ``streamlit run`` unchanged.
"""

from __future__ import annotations

import argparse
import os
import signal
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


def _cmd_app(args: argparse.Namespace) -> int:
    cmd = streamlit_command(args.results, args.port, args.host, args.streamlit_args)
    results = Path(args.results)
    if not results.is_dir():
        print(f"iclwb app: note: results folder {results} does not exist yet; the Results page "
              f"will say so (run `iclwb demo` to fill it)", file=sys.stderr)
    where = f"http://{args.host}:{args.port or 8501}"
    print(f"iclwb app: starting Streamlit at {where} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    return run_server(cmd)


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def run_server(cmd: Sequence[str], grace_s: float = 10.0) -> int:
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
    proc = subprocess.Popen(list(cmd))
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
    p.add_argument("--port", type=int, default=None, help="port (default: Streamlit's, 8501)")
    p.add_argument("--host", default="localhost",
                   help="address to bind (default localhost; 0.0.0.0 exposes the app to the network)")
    p.set_defaults(func=_cmd_app, streamlit_args=[])
