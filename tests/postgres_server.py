"""A throwaway PostgreSQL server for the test session (fixture `postgres_server`).

`initdb` into a temporary folder, `pg_ctl start` on a free port of 127.0.0.1 (unix socket in the same
folder, no durability: fsync off), one database, password authentication over TCP; the server is
stopped and its folder removed when the session ends, also after failures. PostgreSQL refuses to run
as root, so as root the server runs as the `postgres` user (`runuser`) in a folder owned by it.

The binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`) or PATH;
`.ci/ensure-postgres` installs them. Without them the fixture fails: no skipped test stands in for this.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

SERVER_USER = "postgres"  # the OS user that runs the server when the tests run as root
SUPERUSER = "mlops"
DATABASE = "dagster"
START_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    data_dir: Path

    def connect(self, dbname: str | None = None):
        """A psycopg2 connection over TCP with the password (as Dagster connects)."""
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.dbname,
            connect_timeout=5,
        )

    def env(self) -> dict[str, str]:
        """The environment deploy/dagster-postgres.yaml reads the connection from."""
        return {
            "MLOPS_PG_HOST": self.host,
            "MLOPS_PG_PORT": str(self.port),
            "MLOPS_PG_USER": self.user,
            "MLOPS_PG_PASSWORD": self.password,
            "MLOPS_PG_DB": self.dbname,
        }


def find_bindir() -> Path:
    """The folder holding initdb and pg_ctl: the newest Debian PostgreSQL, else initdb on PATH."""
    debian = sorted(
        (Path(path).parent for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda bindir: [int(part) if part.isdigit() else 0 for part in bindir.parent.name.split(".")],
    )
    candidates = [*reversed(debian)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin or on PATH. "
        "Install them with .ci/ensure-postgres (Debian: apt-get install --no-install-recommends postgresql).",
        pytrace=False,
    )


def _as_server_user() -> list[str]:
    """Command prefix to run server tools: `runuser -u postgres --` as root, nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        pytest.fail(
            f"PostgreSQL cannot run as root and there is no '{SERVER_USER}' user to run it as "
            "(the Debian postgresql package creates it: run .ci/ensure-postgres).",
            pytrace=False,
        )
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("the tests run as root, and runuser (util-linux) is needed to start PostgreSQL", pytrace=False)
    return [runuser, "-u", SERVER_USER, "--"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_env() -> dict[str, str]:
    # No PG* variables of the caller (PGHOST, PGPORT, ...) leak into the server's tools.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    env["LC_ALL"] = env["LANG"] = "C"
    return env


def _run(command: list[str], cwd: Path, what: str, timeout: float = 60) -> None:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=_server_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stdout}")


def _wait_until_accepting(server: PostgresServer, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            server.connect(dbname="postgres").close()
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else "(no server log)"
                raise RuntimeError(
                    f"PostgreSQL on 127.0.0.1:{server.port} not accepting connections after "
                    f"{START_TIMEOUT_SECONDS} s: {error}\nserver log:\n{text}"
                ) from error
            time.sleep(0.1)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server with one database; stop it and delete its files on exit."""
    bindir = find_bindir()
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    data_dir, log, password_file = root / "data", root / "server.log", root / "password"
    password = secrets.token_urlsafe(16)
    password_file.write_text(password + "\n")
    if prefix:  # the server runs as `postgres`: it owns the folder (data, socket, log)
        account = pwd.getpwnam(SERVER_USER)
        for path in (root, password_file):
            os.chown(path, account.pw_uid, account.pw_gid)
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data_dir)]
    started = False
    try:
        _run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(password_file),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            root,
            "initdb",
        )
        for attempt in range(3):  # the free port can be taken between probing and binding
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            started = True  # from here on, always try to stop it
            try:
                _run(
                    [*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", str(START_TIMEOUT_SECONDS), "start"],
                    root,
                    "pg_ctl start",
                )
                break
            except RuntimeError as error:
                text = log.read_text(errors="replace") if log.exists() else ""
                if attempt == 2 or "could not bind" not in text:
                    raise RuntimeError(f"{error}\nserver log:\n{text}") from error
        server = PostgresServer("127.0.0.1", port, SUPERUSER, password, DATABASE, data_dir)
        _wait_until_accepting(server, log)
        connection = server.connect(dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            connection.close()
        yield server
    finally:
        try:
            if started and (data_dir / "postmaster.pid").exists():
                try:
                    _run([*pg_ctl, "-m", "fast", "-w", "-t", "30", "stop"], root, "pg_ctl stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    _run([*pg_ctl, "-m", "immediate", "-w", "-t", "30", "stop"], root, "pg_ctl stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the session, with an empty database `dagster`."""
    with running_postgres() as server:
        yield server
