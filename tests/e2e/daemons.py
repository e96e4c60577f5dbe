"""The daemons (`project --follow`, `scheduler run`) as real processes, and what they serve on --metrics-port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cli import BIN
from tests.scheduler.data import wait_until

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], what: str, timeout: float = 60) -> T:
    """Poll `check` for a state of the server or a process (never a guessed time) and return it."""
    return wait_until(check, what, timeout)


class Daemon:
    """A powerlog daemon in the background, its stderr (JSON log lines) in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, metrics_port: int | None = None):
        self.metrics_port = metrics_port
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        full_env.update(env)
        extra = ["--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1"] if metrics_port else []
        self._err = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(BIN), *args, *extra],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def events(self) -> list[str]:
        return [line["event"] for line in self.lines()]

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the metrics endpoint; (0, '') while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> dict[str, float]:
        """Every sample, by name (and labels, as name{k=v}), from /metrics; empty while it does not answer."""
        status, body = self.get("/metrics")
        if status != 200:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/healthz")
        return status, json.loads(body) if body else {}

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._err.close()
