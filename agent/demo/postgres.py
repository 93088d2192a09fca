"""A real PostgreSQL 15 primary and streaming replica on loopback: for the demo, tests and bench."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("FAILSIGHT_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"

REPLICA_NAME = "gcp-euw1"  # cluster_name of the replica: its application_name on the primary
SLOT = "failsight_replica"

# Roles and database made once in the template, so every pair has them.
MONITOR_ROLE = "failsight"  # LOGIN, pg_monitor, CREATE on database postgres: the agent's role
NO_CREATE_ROLE = "nocreate"  # LOGIN, pg_monitor, no CREATE anywhere
# A throwaway lab password of a lab role, not a credential of anything real.
PASSWORD_ROLE = "secretive"  # noqa: S105  # the only role pg_hba asks a password of (scram-sha-256)
PASSWORD = "right-password-123"  # noqa: S105
APP_DATABASE = "app"  # a database nobody created the heartbeat table in

_HBA = f"""\
local all all trust
host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
host replication replicator 127.0.0.1/32 trust
"""

# fsync off: test data need not survive a power cut, and it makes start-up and checkpoints fast.
# The rest is what TESTENV.md lists for a primary that a streaming replica can follow.
_CONF = """
include_if_exists = 'failsight-local.conf'
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 5
max_replication_slots = 5
hot_standby = on
fsync = off
max_connections = 30
shared_buffers = 16MB
"""

_SETUP_SQL = (
    "CREATE ROLE replicator REPLICATION LOGIN",
    f"CREATE ROLE {MONITOR_ROLE} LOGIN IN ROLE pg_monitor",
    f"GRANT CREATE ON DATABASE postgres TO {MONITOR_ROLE}",
    f"CREATE ROLE {NO_CREATE_ROLE} LOGIN IN ROLE pg_monitor",
    f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor",
    f"GRANT CREATE ON DATABASE postgres TO {PASSWORD_ROLE}",
    f"CREATE DATABASE {APP_DATABASE}",  # not allowed inside the transaction of a multi-statement -c
    f"SELECT pg_create_physical_replication_slot('{SLOT}')",
)


class PgError(RuntimeError):
    """A PostgreSQL tool or server failed; the message carries its output or server log."""


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as any other user the tools run directly.
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_OS_USER, "--", *cmd]
    return cmd


def _env() -> dict[str, str]:
    # A stray PGHOST/PGPORT/PGPASSWORD in the caller's environment must not redirect the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def _pg(tool: str, *args: str) -> list[str]:
    return [str(PG_BIN / tool), *args]


def available() -> bool:
    """Whether the PostgreSQL server binaries are installed."""
    return (PG_BIN / "postgres").exists()


def _run(cmd: list[str], *, timeout: float = 60.0, log: Path | None = None) -> str:
    if not available():
        raise PgError(
            f"PostgreSQL 15 server binaries not found in {PG_BIN}: "
            "apt-get install -y postgresql-15 (or set FAILSIGHT_PG_BIN)"
        )
    proc = subprocess.run(
        _as_postgres(cmd), capture_output=True, text=True, timeout=timeout, env=_env(), check=False
    )
    if proc.returncode != 0:
        detail = f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        if log is not None and log.exists():
            detail += f"\n--- server log {log} ---\n{log.read_text(errors='replace')[-6000:]}"
        raise PgError(detail)
    return proc.stdout


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_OS_USER, PG_OS_USER)


def _make_tempdir(prefix: str) -> Path:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700 and the postgres user could not enter it.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _chown_to_postgres(path)
    return path


@dataclass
class PgServer:
    """One PostgreSQL server in its own data directory, listening on 127.0.0.1:port."""

    name: str
    datadir: Path
    sockdir: Path
    port: int
    cluster_name: str = ""

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"{self.name}.log"

    def dsn(
        self, user: str = MONITOR_ROLE, *, password: str | None = None, database: str = "postgres"
    ) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def write_local_conf(self) -> None:
        lines = [f"port = {self.port}", f"unix_socket_directories = '{self.sockdir}'"]
        if self.cluster_name:
            lines.append(f"cluster_name = '{self.cluster_name}'")
        path = self.datadir / "failsight-local.conf"
        path.write_text("\n".join(lines) + "\n")
        _chown_to_postgres(path)

    def start(self) -> None:
        """Start and wait until it accepts connections; a port taken meanwhile gets a new one."""
        for attempt in range(3):
            self.write_local_conf()
            try:
                _run(
                    _pg(
                        "pg_ctl",
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.log),
                        "-w",
                        "-t",
                        "30",
                        "start",
                    ),
                    log=self.log,
                )
                return
            except PgError as exc:
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise
                self.port = free_port()

    def stop(self, mode: str = "fast") -> None:
        _run(_pg("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"))

    def stop_if_running(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(PgError, subprocess.TimeoutExpired):
                self.stop("immediate")

    def sql(self, query: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; the unaligned output, stripped."""
        out = _run(
            _pg(
                "psql",
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
                str(self.sockdir),
                "-p",
                str(self.port),
                "-d",
                database,
                "-c",
                query,
            ),
            timeout=30,
            log=self.log,
        )
        return out.strip()


@dataclass
class PgTemplate:
    """Stopped data directories of a configured primary and its fresh base backup."""

    root: Path
    primary_dir: Path
    replica_dir: Path


def build_template(root: Path) -> PgTemplate:
    """initdb, roles, slot and pg_basebackup once; pairs are then copies (about 1 s each)."""
    primary_dir = root / "primary"
    replica_dir = root / "replica"
    sockdir = root / "sock"
    sockdir.mkdir()
    _chown_to_postgres(sockdir)
    _run(
        _pg(
            "initdb",
            "-D",
            str(primary_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ),
        timeout=120,
    )
    with (primary_dir / "postgresql.conf").open("a") as conf:
        conf.write(_CONF)
    (primary_dir / "pg_hba.conf").write_text(_HBA)
    primary = PgServer("template-primary", primary_dir, sockdir, free_port())
    primary.start()
    try:
        for statement in _SETUP_SQL:
            primary.sql(statement)
        _run(
            _pg(
                "pg_basebackup",
                "-D",
                str(replica_dir),
                "-R",
                "-X",
                "stream",
                "-S",
                SLOT,
                "-c",
                "fast",
                "--no-sync",
                "-U",
                "replicator",
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
            ),
            timeout=120,
            log=primary.log,
        )
    finally:
        primary.stop("fast")
    return PgTemplate(root, primary_dir, replica_dir)


@contextlib.contextmanager
def template_dir() -> Iterator[PgTemplate]:
    root = _make_tempdir("failsight-pgtemplate-")
    try:
        yield build_template(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class PgPair:
    """A running primary and streaming replica, with the faults tests inject into them."""

    root: Path
    primary: PgServer
    replica: PgServer
    replica_name: str = REPLICA_NAME

    def point_replica_at_primary(self) -> None:
        # pg_basebackup -R wrote the template primary's port into postgresql.auto.conf.
        auto = self.replica.datadir / "postgresql.auto.conf"
        auto.write_text(
            f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} user=replicator'\n"
            f"primary_slot_name = '{SLOT}'\n"
        )
        _chown_to_postgres(auto)

    def wait_streaming(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        # replica_name is this module's own constant, not outside input.
        query = (
            "SELECT state FROM pg_stat_replication "  # noqa: S608
            f"WHERE application_name = '{self.replica_name}'"
        )
        while time.monotonic() < deadline:
            if self.primary.sql(query) == "streaming":
                return
            time.sleep(0.05)
        raise PgError(
            f"replica not streaming after {timeout}s\n--- primary log ---\n"
            f"{self.primary.log.read_text(errors='replace')[-4000:]}\n--- replica log ---\n"
            f"{self.replica.log.read_text(errors='replace')[-4000:]}"
        )

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        target = self.primary.sql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.replica.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            if done == "t":
                return
            time.sleep(0.05)
        raise PgError(f"replica did not replay up to {target} within {timeout}s")

    def pause_replay(self) -> None:
        self.replica.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.replica.sql("SELECT pg_wal_replay_resume()")

    def stop_replica(self) -> None:
        self.replica.stop("fast")

    def start_replica(self) -> None:
        self.replica.start()

    def stop_primary(self) -> None:
        self.primary.stop("fast")

    def promote_replica(self) -> None:
        _run(_pg("pg_ctl", "-D", str(self.replica.datadir), "-w", "promote"))

    def shutdown(self) -> None:
        self.replica.stop_if_running()
        self.primary.stop_if_running()


def _copy(src: Path, dst: Path) -> None:
    # cp -a keeps the postgres ownership and the 0700 mode initdb insists on.
    proc = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PgError(f"cp -a {src} {dst}: {proc.stderr}")


@contextlib.contextmanager
def running_pair(
    template: PgTemplate | None = None, ports: tuple[int, int] | None = None
) -> Iterator[PgPair]:
    """A started primary + streaming replica (on free ports unless given), torn down
    (immediate) on exit."""
    with contextlib.ExitStack() as stack:
        if template is None:
            template = stack.enter_context(template_dir())
        root = _make_tempdir("failsight-pg-")
        stack.callback(shutil.rmtree, root, True)
        sockdir = root / "sock"
        sockdir.mkdir()
        _chown_to_postgres(sockdir)
        _copy(template.primary_dir, root / "primary")
        _copy(template.replica_dir, root / "replica")
        primary_port, replica_port = ports or (free_port(), free_port())
        primary = PgServer("primary", root / "primary", sockdir, primary_port)
        replica = PgServer("replica", root / "replica", sockdir, replica_port, REPLICA_NAME)
        pair = PgPair(root, primary, replica)
        stack.callback(pair.shutdown)
        primary.start()
        pair.point_replica_at_primary()
        replica.start()
        pair.wait_streaming()
        yield pair
