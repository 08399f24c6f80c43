"""Starts the real servers the suite runs against: PostgreSQL and `mlflow server`.

Each can be replaced by an already-running one through an environment variable
(REGISTRY_TEST_POSTGRES_URL, REGISTRY_TEST_MLFLOW_URI).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
import sqlalchemy as sa


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found (install postgresql)")
    return Path(candidates[-1]).parent


@dataclass
class Postgres:
    """A throwaway cluster, run as an unprivileged user: postgres refuses root."""

    root: Path
    port: int
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(_pg_bindir() / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @classmethod
    def start(cls) -> Postgres:
        user = "postgres" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="registry-pg-"))
        root.chmod(0o755)
        if user:
            pw = pwd.getpwnam(user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        pg = cls(root, free_port(), user)
        data = root / "data"
        pg._run(
            "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        pg._pg_ctl("start")
        return pg

    def _pg_ctl(self, *action: str) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        data, log = str(self.root / "data"), str(self.root / "log")
        self._run("pg_ctl", "-D", data, "-o", opts, "-l", log, "-w", *action)

    def restart(self) -> None:
        """Stop (every connection dropped, what was committed kept) and start again
        on the same port."""
        self._pg_ctl("-m", "fast", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> bool:
    """Until ``url``/health answers 200; False if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM a server's process group, then SIGKILL what is left after ``grace``."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def create_database(server_url: str, prefix: str) -> str:
    """A fresh database on the server of ``server_url``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(sa.make_url(server_url).set(database=name).render_as_string(hide_password=False))


@dataclass
class MlflowServer:
    process: subprocess.Popen | None
    uri: str
    root: Path | None

    @classmethod
    def start(
        cls,
        backend_uri: str,
        timeout: float = 120.0,
        workers: int | None = 1,
        port: int | None = None,
        artifact_args: tuple[str, ...] | None = None,
        env: dict[str, str] | None = None,
    ) -> MlflowServer:
        """``workers=None`` keeps MLflow's own default (several uvicorn workers);
        ``port`` restarts a stopped server where its clients expect it;
        ``artifact_args`` replace the proxied local artifact store."""
        root = Path(tempfile.mkdtemp(prefix="registry-mlflow-"))
        port = port or free_port()
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        log = open(root / "server.log", "wb")  # noqa: SIM115  (closed with the process)
        process = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--backend-store-uri",
                backend_uri,
                *(artifact_args or ("--artifacts-destination", str(root / "artifacts"))),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *(["--workers", str(workers)] if workers is not None else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
            env={**os.environ, **(env or {})},
        )
        server = cls(process, f"http://127.0.0.1:{port}", root)
        if wait_healthy(server.uri, process, timeout):
            return server
        log_text = (root / "server.log").read_text()
        server.stop()
        raise RuntimeError(f"mlflow server did not become healthy:\n{log_text[-4000:]}")

    def stop(self) -> None:
        """Stop the whole process group: the server spawns workers of its own."""
        if self.process is None:
            return
        try:
            stop_group(self.process, grace=15)
        finally:
            if self.root:
                shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class S3Server:
    """moto's S3-compatible server: the artifact store of a deployment, run here."""

    process: subprocess.Popen
    url: str

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"

    @classmethod
    def start(cls, timeout: float = 60.0) -> S3Server:
        port = free_port()
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = cls(process, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return server
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.2)
        server.stop()
        raise RuntimeError("moto_server did not start")

    @property
    def env(self) -> dict[str, str]:
        """What MLflow and boto3 need to reach it, in every process that touches artifacts."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name="us-east-1",
        ).create_bucket(Bucket=name)

    def stop(self) -> None:
        stop_group(self.process, grace=10)


@dataclass
class ServiceProcess:
    """`registry-service serve` in a process of its own, as `make run` starts it, that a
    test can stop and start again on the same port."""

    env: dict[str, str]
    log_path: Path
    cwd: Path
    port: int = 0
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        command = [
            str(Path(sys.executable).parent / "registry-service"),
            "serve",
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_healthy(self.url, self.process, timeout):
            return self
        self.stop()
        raise RuntimeError(f"service did not start:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop_group(self.process, grace=20)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def read_http_message(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (or none); b"" when closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class FaultyProxy:
    """A TCP proxy in front of a real server that loses answers on purpose.

    ``drop(n, match, after=k)``: past the next ``k``, the next ``n`` requests whose
    request line contains ``match`` reach the server, which acts on them, but the client
    gets a closed connection and no answer. With ``then_refuse``, every later connection
    is closed at once too, until ``heal()``: the server looks gone right after it acted.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.match = b""
        self.to_pass = 0
        self.to_drop = 0
        self.dropped = 0
        self.refusing = False
        self.then_refuse = False
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop(self, n: int = 1, match: str = "", after: int = 0, then_refuse: bool = False) -> None:
        with self.lock:
            self.to_drop, self.match, self.then_refuse = n, match.encode(), then_refuse
            self.to_pass = after

    def heal(self) -> None:
        with self.lock:
            self.to_drop, self.refusing = 0, False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _should_drop(self, request: bytes) -> bool:
        with self.lock:
            if self.to_drop and self.match in request.split(b"\r\n", 1)[0]:
                if self.to_pass:
                    self.to_pass -= 1
                    return False
                self.to_drop -= 1
                self.dropped += 1
                self.refusing = self.then_refuse
                return True
            return False

    def _serve(self, client: socket.socket) -> None:
        with client:
            if self.refusing:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with upstream:
                while True:
                    request = read_http_message(client)
                    if not request or self.refusing:
                        return
                    upstream.sendall(request)
                    answer = read_http_message(upstream)
                    if self._should_drop(request) or not answer:
                        return  # the server acted; the client hears nothing
                    client.sendall(answer)

    def close(self) -> None:
        self.listener.close()
