"""A throwaway PostgreSQL server for the tests: Debian's binaries, initdb into a temp folder, listening on
127.0.0.1 at a free port only, run as a non-root user (PostgreSQL refuses root), stopped at the end."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER, PASSWORD = "hpsearch", "pg-test-secret-7f3a"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        # Its own folder straight under /tmp: pytest's temp folders are private to root, which the server
        # user could not enter.
        self.folder = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
        self.bindir, self.port, self.data = _bindir(), free_port(), self.folder / "data"
        # As root, run the server as Debian's `postgres` user, which owns the folder.
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _run(self, *argv: str) -> None:
        def demote() -> None:
            if self.owner:
                os.setgid(self.owner.pw_gid)
                os.setuid(self.owner.pw_uid)

        p = subprocess.run(argv, capture_output=True, text=True, preexec_fn=demote, cwd="/", timeout=120)
        if p.returncode:
            raise RuntimeError(f"{argv[0]} failed: {p.stdout}{p.stderr}")

    def start(self) -> PostgresServer:
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD)
        if self.owner:
            shutil.chown(self.folder, self.owner.pw_uid, self.owner.pw_gid)
            shutil.chown(pwfile, self.owner.pw_uid, self.owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        self.up()
        return self

    def stop(self) -> None:
        self.down()
        shutil.rmtree(self.folder, ignore_errors=True)

    def down(self) -> None:
        """The server goes away (as in a crash or a failover): clients' connections drop, new ones are refused."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def up(self) -> None:
        """The server comes back on the same port."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")  # fmt: skip

    def url(self, dbname: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
