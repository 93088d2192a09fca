"""The `replication:` config: one entry per cluster (its primary, its replicas, the RPO their lag
is judged by, the heartbeat table), and the secrets a DSN carries, which nothing the check emits
may quote."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from failsight.core.configtypes import (
    Duration,
    Interval,
    Model,
    Name,
    Placed,
    Scheduled,
    Secret,
    Timeout,
)

_IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"
_TABLE = re.compile(rf"^({_IDENTIFIER})\.({_IDENTIFIER})$")


class ReplicationEndpoint(Model):
    """One PostgreSQL server of a cluster, at a site."""

    site: Name
    dsn: Secret

    @field_validator("dsn")
    @classmethod
    def _postgres_uri(cls, value: Secret) -> Secret:
        # asyncpg only takes URIs; the message must not echo the value, which holds a password.
        scheme = value.get_secret_value().split("://", 1)[0].lower()
        if scheme not in ("postgresql", "postgres") or "://" not in value.get_secret_value():
            raise ValueError("must be a postgresql://user:password@host:port/database URI")
        return value


class ReplicaConfig(ReplicationEndpoint):
    """A standby: `name` labels its series (default: site); `application_name` is the name it
    streams under, as `pg_stat_replication` shows it (default: name)."""

    name: Name
    application_name: Name

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("name") is None and "site" in data:
                data["name"] = data["site"]
            if data.get("application_name") is None and "name" in data:
                data["application_name"] = data["name"]
        return data


class ReplicationConfig(Scheduled, Placed):
    """One `replication:` entry: a primary, its replicas and the RPO their lag is judged by."""

    # A refused DSN must not be echoed in errors: it holds a password. Pydantic takes this
    # setting from the outermost model, so the agent's top-level config needs it as well.
    model_config = ConfigDict(hide_input_in_errors=True)

    cluster: Name
    rpo: Duration
    interval: Interval = 5.0
    timeout: Timeout = 5.0
    heartbeat_table: str = "failsight.heartbeat"
    primary: ReplicationEndpoint
    replicas: tuple[ReplicaConfig, ...] = Field(min_length=1)

    @field_validator("heartbeat_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(
                "must be schema.table in lower-case letters, digits and underscores "
                "(each part at most 63 characters, not starting with a digit)"
            )
        return value

    @model_validator(mode="after")
    def _unique_replicas(self) -> ReplicationConfig:
        for attr in ("name", "application_name"):
            seen: set[str] = set()
            for replica in self.replicas:
                value = getattr(replica, attr)
                if value in seen:
                    raise ValueError(f"replicas: {attr} {value!r} is used twice")
                seen.add(value)
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatTable:
    """A validated `heartbeat_table` (see ReplicationConfig): its parts and its SQL form."""

    name: str  # schema.table, as configured
    schema: str
    table: str

    @classmethod
    def of(cls, name: str) -> HeartbeatTable:
        schema, table = name.split(".")
        return cls(name, schema, table)

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.table}"'


def dsn_secrets(dsn: Secret) -> list[str]:
    """The DSN and every form of its password: in the userinfo (as written and decoded) and in
    a `?password=` query parameter, which asyncpg also takes."""
    raw = dsn.get_secret_value()
    values = [raw]
    try:
        parts = urlsplit(raw)
        password = parts.password
        query = parse_qs(parts.query)
    except ValueError:  # an invalid port or IPv6 literal: asyncpg refuses it too
        return values
    if password:
        values += [password, unquote(password)]
    values += [p for p in query.get("password", []) if p]
    return values
