"""Helpers for tests that run `research` as a real subprocess and signal it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def research_env(folder: Path, data_dir: Path, tracking_uri: str | None = None,
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a `research` subprocess working in `folder` with its own store and cache."""
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{folder / 'mlflow.db'}",
        "RESEARCH_CACHE_DIR": str(folder / "cache"),
        "RESEARCH_DATA_DIR": str(data_dir),
        # Fail fast when a tracking server goes away instead of retrying for minutes.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        # One thread per process keeps the tiny trainings fast on a shared machine and
        # makes the runs compared below use the same summation order.
        "OMP_NUM_THREADS": "1",
    })
    env.update(extra or {})
    return env


def start_research(args: list[str], folder: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "research.cli", *args], cwd=folder, env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_research(args: list[str], folder: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """Run `research` to the end; return its exit status and output."""
    done = subprocess.run([sys.executable, "-m", "research.cli", *args], cwd=folder, env=dict(env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return done.returncode, done.stdout.decode(errors="replace")


def read_until(process: subprocess.Popen[bytes], pattern: str) -> str:
    """Read the output of `process` until `pattern` (a regex) matches; fail when it exits first.

    Reads raw chunks, because progress bars end their updates with '\\r', not a newline.
    """
    seen = b""
    assert process.stdout is not None
    while True:
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            process.wait()
            raise AssertionError(f"process exited ({process.returncode}) before printing {pattern!r}:\n"
                                 + seen.decode(errors="replace")[-3000:])
        seen += chunk
        text = seen.decode(errors="replace")
        if re.search(pattern, text):
            return text


def finish(process: subprocess.Popen[bytes], before: str = "") -> tuple[int, str]:
    """Wait for `process` to exit; return its status and all its output."""
    rest, _ = process.communicate()
    return process.returncode, before + rest.decode(errors="replace")


def signal_paused(process: subprocess.Popen[bytes], number: int) -> None:
    """Deliver `number` while the process is stopped, so it cannot finish its work before the signal lands."""
    os.kill(process.pid, signal.SIGSTOP)
    os.kill(process.pid, number)
    os.kill(process.pid, signal.SIGCONT)


def run_id_in(output: str) -> str:
    found = re.search(r"research run --resume ([0-9a-f]{32})", output) or re.search(r"Run ([0-9a-f]{32})", output)
    assert found, output
    return found.group(1)
