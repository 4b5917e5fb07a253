"""A real countersignd for the tests: a fresh SoftHSM2 token, an SQLite store and a configuration in a temporary
directory, principals registered with the real CLI, the server on free loopback ports.

The binaries come from $COUNTERSIGN_BIN_DIR (default: the repository's .build/debug, as `make test` builds them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("COUNTERSIGN_BIN_DIR", REPO / ".build" / "debug"))
MODULE = os.environ.get("COUNTERSIGN_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
PIN = "python-tests-pin"  # a throw-away token's PIN, passed in the environment only

CONFIG = """\
issuer: countersign.python-tests
listen: {{ address: 127.0.0.1, port: {port} }}
http: {{ address: 127.0.0.1, port: {http_port} }}
data_dir: {data}
hsm: {{ module: {module}, token_label: {label}, max_sessions: 4, timeout: 2s }}
limits: {{ shutdown_grace: 2s }}
console: {{ origin: "http://localhost:{http_port}" }}
tiers:
  - {{ name: micro, max_amount: {{ USD: 2000, JPY: 3000 }}, key: micro, backend: software, lifetime: 5m, checks: [rate_limit] }}
  - {{ name: standard, max_amount: {{ USD: 50000, JPY: 75000 }}, key: standard, backend: software, lifetime: 5m, checks: [merchant_rules] }}
  - {{ name: high, max_amount: {{ USD: 5000000 }}, key: high, backend: hsm, lifetime: 2m, checks: [intent] }}
  - name: critical
    max_amount: {{ USD: 50000000 }}
    key: critical
    backend: hsm
    lifetime: 1m
    checks: []
    approval: {{ quorum: 2, ttl: 15m }}
organizations:
  - {{ name: acme, budgets: [{{ limit: {{ USD: 100000000 }}, window: month }}] }}
teams:
  - {{ name: agents, organization: acme, budgets: [{{ limit: {{ USD: 100000000 }}, window: day }}] }}
profiles:
  - name: python
    team: agents
    agents: [{agents}]
    highest_tier: critical
    merchants: {{ block: [m-casino] }}
    categories: {{ block: ["7995"] }}
    rate_limit: {{ requests: 100000, per: 1m }}
    budgets: [{{ limit: {{ USD: 100000000 }}, window: day }}]
  - name: tight
    team: agents
    agents: [agent-tight]
    highest_tier: standard
    rate_limit: {{ requests: 100000, per: 1m }}
    budgets: [{{ limit: {{ USD: 5000 }}, window: day }}]
"""

AGENTS = {"agent-es": "ES256", "agent-ed": "Ed25519", "agent-mcp": "ES256", "agent-load": "ES256", "agent-tight": "ES256"}
APPROVERS = ("alice", "bob")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One countersignd and what the tests need to talk to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.http_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data = root / "data"
        self.config = root / "countersign.yaml"
        hsm = root / "hsm"
        label = "python-tests"
        self.env = dict(
            os.environ,
            SOFTHSM2_CONF=str(hsm / "softhsm2.conf"),
            COUNTERSIGN_HSM_PIN=PIN,
            COUNTERSIGN_SERVER=self.address,
        )
        token_env = dict(self.env, COUNTERSIGN_HSM_DIR=str(hsm), COUNTERSIGN_TOKEN_LABEL=label, COUNTERSIGN_PKCS11_MODULE=MODULE)
        token_env["COUNTERSIGN_HSM_SO_PIN"] = "python-tests-so-pin"
        subprocess.run([str(REPO / "hsm-config" / "init-token.sh")], env=token_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.config.write_text(
            CONFIG.format(
                port=self.port,
                http_port=self.http_port,
                data=self.data,
                module=MODULE,
                label=label,
                agents=", ".join(name for name in AGENTS if name != "agent-tight"),
            )
        )
        self.run_daemon("init")
        self.admin = self.data / "admin.credential"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()
        for name, algorithm in AGENTS.items():
            self.cli("agents", "add", name, "--algorithm", algorithm, "--out", str(self.credential(name)))
        for name in APPROVERS:
            self.cli("agents", "add", name, "--role", "approver", "--out", str(self.credential(name)))

    @property
    def console_origin(self) -> str:
        return f"http://localhost:{self.http_port}"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/.well-known/jwks.json"

    def credential(self, name: str) -> Path:
        return self.root / f"{name}.credential"

    def run_daemon(self, *arguments: str) -> None:
        subprocess.run([str(BIN / "countersignd"), *arguments, "--config", str(self.config)], env=self.env, check=True, capture_output=True)

    def cli(self, *arguments: str, credential: Path | None = None) -> str:
        env = dict(self.env, COUNTERSIGN_CREDENTIAL=str(credential or self.admin))
        done = subprocess.run([str(BIN / "countersign"), *arguments], env=env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"countersign {' '.join(arguments)} failed: {done.stderr}")
        return done.stdout

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(BIN / "countersignd"), "serve", "--config", str(self.config)], env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"countersignd exited with {self.process.returncode}; see {self.root / 'server.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("countersignd did not become ready within 30 s")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what was committed must survive."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("countersign"))
    try:
        yield instance
    finally:
        instance.stop()
