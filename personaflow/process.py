"""Running ``personaflow worker``, ``executor`` and ``audit`` as child processes (demo,
tests, chaos runs)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streams.settings import Settings

from .embedded import die_with_parent


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment that reproduces ``settings`` in a child process."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if not key.startswith(("PERSONAFLOW_", "KAFKA_"))
    }
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is not None:
            env[field.validation_alias.choices[0]] = str(value)  # type: ignore[union-attr]
    return env


class ChildProcess:
    """One ``personaflow`` child process with its own log file; restartable and killable."""

    command: tuple[str, ...] = ()
    name = "child"
    start_timeout_s = 60.0

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def spawn(self) -> None:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "personaflow.cli", *self.command],
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def ready(self) -> bool:
        """Whether the child says it is ready (each kind says it its own way)."""
        raise NotImplementedError

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until :meth:`ready`; fail with the log's tail if the child exits or is too slow."""
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready within {timeout_s}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def stop(self, *, kill: bool = False, timeout_s: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class WorkerProcess(ChildProcess):
    """``personaflow worker``: ready when its ``/ready`` answers."""

    command = ("worker",)
    name = "worker"
    start_timeout_s = 120.0  # recovery of a large state comes first

    def _answers(self, path: str) -> bool:
        """``path`` on the worker's web port answers 200."""
        try:
            with urllib.request.urlopen(f"{self.settings.web_url}{path}", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def healthy(self) -> bool:
        return self._answers("/health")

    def get(self, path: str, timeout_s: float = 10.0) -> bytes:
        with urllib.request.urlopen(f"{self.settings.web_url}{path}", timeout=timeout_s) as response:
            return response.read()

    def ready(self) -> bool:
        """``/ready`` answers 200: every assigned partition recovered and processing."""
        return self._answers("/ready")


class LineReadyProcess(ChildProcess):
    """A child that says it is ready with a line in its log (``ready_text``)."""

    ready_text = "ready"

    def ready(self) -> bool:
        return self.ready_text in self.log_tail(200)


class ExecutorProcess(LineReadyProcess):
    """``personaflow executor`` (the reference executor): ready once it joined its group."""

    name = "executor"
    ready_text = "executor ready"

    def __init__(self, settings: Settings, log_dir: Path, group: str = "personaflow-executor") -> None:
        super().__init__(settings, log_dir)
        self.command = ("executor", "--group", group)


class AuditProcess(LineReadyProcess):
    """``personaflow audit``: ready once it joined its group and sought the stored positions."""

    name = "audit"
    ready_text = "audit ready"

    def __init__(self, settings: Settings, log_dir: Path, db: str, group: str) -> None:
        super().__init__(settings, log_dir)
        self.command = ("audit", "--db", db, "--group", group)
