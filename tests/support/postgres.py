"""TEST-ONLY PostgreSQL for tests marked ``postgres``.

``NEWSWATCH_TEST_PG_URL`` (a SQLAlchemy URL whose user may CREATE DATABASE) points the tests
at an existing server. Otherwise a throwaway cluster is made with the Debian binaries
(``initdb``/``pg_ctl`` on PATH or in /usr/lib/postgresql/*/bin) in a temporary directory,
listening on 127.0.0.1 on a free port, trust auth, durability off (fast, and it is thrown
away). As root, initdb refuses to run, so the cluster belongs to the ``postgres`` system user
and its commands go through ``runuser``. Each test gets its own database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL_ENV = "NEWSWATCH_TEST_PG_URL"
SUPERUSER = "newswatch"


class PostgresUnavailable(RuntimeError):
    """No server given and no PostgreSQL binaries to start one (the tests skip)."""


def find_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl: PATH first, then Debian's versioned dirs."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                        else 0, reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A server to make test databases on: an existing one (admin URL) or our own cluster."""

    def __init__(self, admin_url: str, *, data_dir: Path | None = None,
                 bindir: Path | None = None, run_as: str | None = None) -> None:
        self.admin_url = admin_url
        self.data_dir = data_dir
        self.bindir = bindir
        self.run_as = run_as
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    # ---- starting and stopping -----------------------------------------------------------

    @classmethod
    def from_environment(cls) -> PostgresServer:
        """The server named by NEWSWATCH_TEST_PG_URL, else a new local cluster."""
        url = os.environ.get(PG_URL_ENV, "").strip()
        if url:
            return cls(url)
        return cls.start_cluster()

    @classmethod
    def start_cluster(cls) -> PostgresServer:
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL tests need initdb/pg_ctl (Debian package postgresql; .ci/system-deps "
                f"installs it) or {PG_URL_ENV}=postgresql+psycopg://user@host:port/db")
        run_as = None
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to `postgres`
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "running as root needs the `postgres` system user (Debian's postgresql "
                    "package creates it) to own the test cluster") from exc
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root needs runuser (util-linux)")
            run_as = "postgres"
        data_dir = Path(tempfile.mkdtemp(prefix="newswatch-pg-"))
        if run_as:
            user = pwd.getpwnam(run_as)
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        server = None
        try:
            _run(run_as, [str(bindir / "initdb"), "-D", str(data_dir / "data"), "-A", "trust",
                          "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "-N"])
            last_error: Exception | None = None
            for _attempt in range(3):  # a free port can be taken before the server binds it
                port = _free_port()
                options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} "
                           "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                           "-c max_connections=200")
                try:
                    _run(run_as, [str(bindir / "pg_ctl"), "-D", str(data_dir / "data"),
                                  "-l", str(data_dir / "server.log"), "-w", "-t", "60",
                                  "-o", options, "start"])
                except subprocess.CalledProcessError as exc:
                    last_error = exc
                    continue
                server = cls(f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/postgres",
                             data_dir=data_dir, bindir=bindir, run_as=run_as)
                return server
            log = (data_dir / "server.log")
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{detail}")
        finally:
            if server is None:
                shutil.rmtree(data_dir, ignore_errors=True)

    def stop(self) -> None:
        """Drop the admin connections and, for our own cluster, stop it and delete its files."""
        self._admin.dispose()
        if self.data_dir is None or self.bindir is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            _run(self.run_as, [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir / "data"),
                               "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- databases -----------------------------------------------------------------------

    def url_for(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(
            hide_password=False)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        name = name or f"nwtest_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0'))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database for one test, dropped afterwards (even with connections open)."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)


def _run(run_as: str | None, argv: list[str]) -> None:
    if run_as:
        argv = ["runuser", "-u", run_as, "--", *argv]
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(argv, check=True, capture_output=True, text=True, env=env, timeout=120,
                   cwd="/")
