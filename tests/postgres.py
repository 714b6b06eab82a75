"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's ``postgresql`` package).

``with Cluster() as pg:`` runs initdb in a temporary directory (as root: as the ``postgres``
user, since initdb refuses root; as anyone else: as that user, no privilege needed), starts
the server on a Unix socket in that directory only (no TCP port: nothing else on the machine
can reach it, and namespaces share the file system, so a collector in the lab's ``net``
namespace connects through it too), and on exit stops it (immediate shutdown) and deletes
the directory, also when the test failed. ``pg.create()``
gives a fresh database's connection string.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

_counter = itertools.count()


def initdb() -> str | None:
    """The newest installed PostgreSQL's initdb, or None (tests: ``require_tool``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return found[-1] if found else None


def _bin() -> Path:
    found = initdb()
    if found is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found).parent


class Cluster:
    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        """``durable``: fsync and the README's settings, as in production (benchmarks);
        tests run without fsync."""
        self.durable = durable
        self.settings = settings or {}
        self.dir: Path | None = None
        self.bin = _bin()
        self.started = False

    def _as_postgres(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)

    def __enter__(self) -> Cluster:
        self.dir = Path(tempfile.mkdtemp(prefix="probe-pg-"))
        try:
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            data = self.dir / "data"
            r = self._as_postgres([str(self.bin / "initdb"), "-D", str(data), "-A", "trust",
                                   "-U", "postgres", "-E", "UTF8", "--no-sync"])  # fmt: skip
            if r.returncode:
                raise RuntimeError(f"initdb failed: {r.stderr}")
            options = {
                "listen_addresses": "''",
                "unix_socket_directories": f"'{self.dir}'",
                "fsync": "on" if self.durable else "off",
                "synchronous_commit": "on" if self.durable else "off",
                "full_page_writes": "on" if self.durable else "off",
                "max_connections": "200",
                # The README's production settings: fewer, compressed full-page writes.
                **(
                    {
                        "wal_compression": "lz4",
                        "max_wal_size": "'4GB'",
                        "checkpoint_timeout": "'15min'",
                        "wal_buffers": "'64MB'",
                    }
                    if self.durable
                    else {}
                ),
                "shared_buffers": "512MB" if self.durable else "128MB",
                **self.settings,
            }
            conf = "".join(f"{k} = {v}\n" for k, v in options.items())
            with open(data / "postgresql.conf", "a") as f:
                f.write(conf)
            r = self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                                   "-l", str(self.dir / "log"), "start"])  # fmt: skip
            if r.returncode:
                log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
                raise RuntimeError(f"pg_ctl start failed: {r.stderr}\n{log}")
            self.started = True
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.dir is None:
            return
        if self.started:
            self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                               "immediate", "-w", "stop"])  # fmt: skip
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql:///{database}?host={self.dir}&user=postgres"

    def create(self, name: str | None = None) -> str:
        """A new empty database; its connection string."""
        import psycopg

        name = name or f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return self.dsn(name)


class Collector:
    """``probe collector serve`` as a process (in a lab namespace when ``lab`` is given):
    ``url``, ``log`` (its stderr), :meth:`stop` (SIGKILL: it goes away) and :meth:`start`."""

    def __init__(self, dsn: str, log: Path, *, host: str = "127.0.0.1", port: int = 0,
                 args: tuple[str, ...] = (), lab=None) -> None:  # fmt: skip
        self.dsn, self.log_path, self.host, self.port = dsn, log, host, port
        self.args, self.lab = args, lab
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Collector:
        import sys
        import time

        argv = [sys.executable, "-m", "probe.cli", "collector", "serve", "--listen",
                f"{self.host}:{self.port}", "--database", self.dsn, *self.args]  # fmt: skip
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "a") as log:
            if self.lab is not None:
                self.process = self.lab.spawn(self.lab.net, argv, stderr=log)
            else:
                self.process = subprocess.Popen(argv, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text()[offset:]
            for line in text.splitlines():
                if line.startswith("listening on "):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the collector exited: {text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the collector did not start")

    def stop(self) -> None:
        """SIGKILL, as a crash or a pulled cable would end it."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            self.process.wait(10)

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
