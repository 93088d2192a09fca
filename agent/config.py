"""The typed, validated agent config: the contract's top-level keys and cross-field rules."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from types import GenericAlias
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model, field_validator

from failsight.agent.control import MaintenanceConfig
from failsight.agent.group import GroupConfig
from failsight.agent.logs import LogsConfig
from failsight.agent.otlp_config import OtlpCollectorConfig
from failsight.agent.peers import PeerConfig
from failsight.agent.slo import SloConfig
from failsight.agent.yamlsource import (
    ConfigError,
    ConfigInvalid,
    ConfigUnreadable,
    SourceMap,
    load_yaml,
    merge_sources,
)
from failsight.core.check import Check
from failsight.core.configtypes import Duration, Interval, Model, Name, Scheduled, Secret, Timeout
from failsight.core.kind import Endpoint, Env, Kind, Loc, SiteRef, duplicates
from failsight.core.redact import REDACTOR
from failsight.probes.registry import KINDS
from failsight.probes.selfcheck import SelfCheckConfig

C = TypeVar("C", bound=BaseModel)

_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")


class AgentConfig(Model):
    vantage: Name
    listen: str = "127.0.0.1:9747"
    concurrency: int = Field(default=64, ge=1, le=10_000)
    # Connections the API keeps open at once; beyond it the oldest idle one is closed first,
    # so idle or half-open sockets can never lock out /healthz or the verdict.
    max_connections: int = Field(default=256, ge=8, le=65_536)
    shutdown_grace: Timeout = 10.0
    # Reuse HTTP connections between runs (cheaper); false opens a fresh connection per
    # request, so every run also measures DNS, TCP and TLS set-up, as blackbox_exporter does.
    keepalive: bool = True
    # When set, /v1/view answers only requests bearing this token (the peers' bearer_token).
    view_token: Secret | None = None
    # When set, the operator endpoints (failback, hold) need this bearer token; without it they
    # answer 403. Keep it apart from view_token: peers hold that one.
    admin_token: Secret | None = None
    # Where holds, failbacks and failover latches are kept across restarts (control.json).
    state_dir: str | None = None
    # Something outside the sites that this vantage should always reach (impairment check).
    self_check: SelfCheckConfig | None = None
    # The other agents of this vantage, found in DNS or listed: they share the checks out
    # (agent/group.py). None: this agent runs every check itself.
    group: GroupConfig | None = None
    cloud_provider: str | None = None
    cloud_region: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if not match or not 0 <= int(match.group("port")) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9747")
        return value

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class FailbackConfig(Model):
    """How a latched failover is released: by an operator, or after `stable_for` healthy."""

    policy: Literal["manual", "auto"] = "manual"
    stable_for: Duration = 600.0


class SiteConfig(Model):
    name: Name
    role: Literal["primary", "standby"]
    base_url: str
    ca_file: str | None = None
    tls_verify: bool = True  # false only for lab set-ups; logged as a warning at load
    headers: dict[str, Secret] = Field(default_factory=dict)
    failback: FailbackConfig | None = None  # overrides verdict.failback for this site

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("expected an http:// or https:// URL")
        try:
            urlsplit(value).port  # noqa: B018 (it raises for a port past 65535 or not a number)
        except ValueError:
            raise ValueError("the URL's port must be a number from 0 to 65535") from None
        return value.rstrip("/")


class VerdictConfig(Model):
    failure_threshold: int = Field(default=3, ge=1, le=100)
    recovery_threshold: int = Field(default=2, ge=1, le=100)
    # Fresh, non-impaired views that must agree; default: a majority of all vantages.
    quorum: int | None = Field(default=None, ge=1)
    peer_stale_after: Duration = 60.0
    failback: FailbackConfig = Field(default_factory=FailbackConfig)
    # After a failed critical run, re-run the journey this soon until the view settles (down,
    # or up again): detection in one interval plus (failure_threshold - 1) of these.
    confirm_interval: Interval | None = None
    flap_threshold: float = Field(default=3.0, ge=1.0, le=100.0)
    flap_half_life: Duration = 600.0


class PrometheusConfig(Model):
    enabled: bool = True


class TelemetryConfig(Model):
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    otlp: list[OtlpCollectorConfig] = Field(default_factory=list)
    logs: LogsConfig = Field(default_factory=LogsConfig)


class CoreConfig(Model):
    """The agent's own top-level keys. Each kind's section (`journeys`, `idps`, `dns`...) is
    added to the model from its `Kind` (see `Config` below), so the agent never lists them."""

    agent: AgentConfig
    sites: list[SiteConfig] = Field(min_length=1)
    slos: list[SloConfig] = Field(default_factory=list)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    peers: list[PeerConfig] = Field(default_factory=list)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    maintenance: list[MaintenanceConfig] = Field(default_factory=list)

    def site(self, name: str) -> SiteConfig:
        return next(s for s in self.sites if s.name == name)

    def section(self, kind: Kind[C]) -> tuple[C, ...]:
        """A kind's configured objects, in file order: its top-level list, or the one object
        at its dotted key (`agent.self_check`) when that is set."""
        value: object = self
        for part in kind.key.split("."):
            value = getattr(value, part, None)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        return tuple(item for item in items if isinstance(item, kind.model))

    @property
    def vantages(self) -> tuple[str, ...]:
        return (self.agent.vantage, *(p.name for p in self.peers))

    @property
    def quorum(self) -> int:
        if self.verdict.quorum is not None:
            return self.verdict.quorum
        return len(self.vantages) // 2 + 1


def _assemble() -> type[CoreConfig]:
    """The config model: the agent's keys plus one list per kind, from the registry."""
    sections: dict[str, Any] = {
        # The item type is known only at run time (the registry's kinds), hence GenericAlias.
        kind.key: (GenericAlias(list, kind.model), Field(default_factory=list))
        for kind in KINDS
        if kind.top_level
    }
    return create_model("Config", __base__=CoreConfig, __module__=__name__, **sections)


if TYPE_CHECKING:
    Config = CoreConfig
else:
    Config = _assemble()


def env(config: CoreConfig) -> Env:
    """What the kinds see of the config: the sites, every section's names, every endpoint."""
    sites = tuple(
        SiteRef(s.name, s.role, s.base_url, s.ca_file, s.tls_verify, s.headers)
        for s in config.sites
    )
    endpoints = [Endpoint(f"site/{s.name}", s.base_url, s.ca_file, s.tls_verify) for s in sites]
    names: dict[str, frozenset[str]] = {}
    for kind in KINDS:
        section = config.section(kind)
        endpoints.extend(kind.endpoints(section))
        if kind.naming is not None:
            names[kind.key] = frozenset(map(kind.naming[1], section))
    return Env(config.agent.vantage, sites, names, tuple(endpoints))


def plan(config: CoreConfig) -> list[Check]:
    """Every check the config asks for, kind by kind, each name unique."""
    where = env(config)
    return [check for kind in KINDS for check in kind.plan(config.section(kind), where)]


def load_config(*paths: str | Path) -> Config:
    """Load and validate a config, from one file or several merged in order (later files merge
    over earlier ones, see `merge_sources`). Raises ConfigInvalid listing every problem, in
    every file, in one answer (see `_validate_all`); ConfigUnreadable when a file cannot be read."""
    if not paths:
        raise TypeError("load_config needs at least one file")
    files = [str(p) for p in paths]
    loaded: list[tuple[Any, SourceMap]] = []
    problems: list[ConfigError] = []
    whole = True  # every file parsed into a mapping: the merged config means something
    for path in paths:
        try:
            data, smap = load_yaml(path)
        except ConfigUnreadable:
            raise
        except ConfigInvalid as exc:
            problems += exc.errors  # keep reading: every file's problems in one answer
            whole = False
            continue
        if not isinstance(data, dict):
            problems.append(smap.error((), "the config must be a mapping of top-level keys"))
            whole = False
        loaded.append((data, smap))
    if not whole or not loaded:
        # A file missing from the merge would make every key it holds look missing: report
        # what was found in each file, and nothing about the whole.
        problems += [p for _, smap in loaded for p in smap.problems]
        resolved = set().union(*(smap.resolved for _, smap in loaded))
        raise SourceMap(files[0], resolved=resolved).redacted(ConfigInvalid(problems, files), files)
    data, smap = functools.reduce(merge_sources, loaded)
    config, errors = _validate_all(data, smap)
    errors = smap.problems + errors
    if errors or config is None:
        # A `${env:…}`/`${file:…}` value put in a field that quotes what it refuses (an
        # interval, a site list) must not be printed: redact every value the loader resolved.
        raise smap.redacted(ConfigInvalid(errors, files), files)
    # From here on the process redacts this config's secrets from everything it emits.
    REDACTOR.add(*secrets_in(config))
    return config


# How many times `_validate_all` validates, at most: the file, then again after each cut of
# what was refused. Each round cuts every refused place, and a place is cut at most once, so
# real configs need two or three.
_MAX_CUTS = 12


def _validate_all(data: dict[str, Any], smap: SourceMap) -> tuple[Config | None, list[ConfigError]]:
    """The config, or None, and every problem of structure (the model) and of meaning
    (`semantic_errors`: references, template variables, names) in one answer.

    The cross-checks need a valid model. When the model refuses the file, what it refused is
    cut out (a key with a default falls back to it; a list item or a key without one goes
    whole, the smallest enclosing thing that can) until the rest validates, and the rest is
    cross-checked. What a cut could have caused is not reported: errors about a place something
    was cut from (`at least one primary` when a site was cut), and errors that name something
    cut (`unknown site 'b'` when site b was). So fixing what is reported never brings up
    errors that were there all along, only ones that fixing uncovers.
    """
    errors: list[ConfigError] = []
    cut: set[Loc] = set()
    for _ in range(_MAX_CUTS):
        pruned, kept = _without(data, cut) if cut else (data, {})
        try:
            config = Config.model_validate(pruned)
        except ValidationError as exc:
            if not cut:  # the file as written: these are the structural errors to report
                errors = [
                    _from_pydantic(err, smap)
                    for err in exc.errors()
                    if not smap.is_broken(_loc(err))
                ]
            more = {_cut_point(data, _original(_loc(err), kept), cut) for err in exc.errors()}
            if None in more or not more:
                return None, errors  # something required at the top: no cross-checks
            cut |= {c for c in more if c is not None}
            continue
        names = _names_cut(data, cut)
        holding_cut = {c[:end] for c in cut for end in range(len(c) + 1)}
        for loc, message in semantic_errors(config):
            where = _original(loc, kept)
            if smap.is_broken(where) or where in holding_cut or _about_cut(message, names):
                continue
            errors.append(smap.error(where, message))
        return (None if cut else config), errors
    return None, errors


def _loc(err: Any) -> Loc:
    return tuple(p for p in err["loc"] if isinstance(p, str | int))


def _without(data: Any, cut: set[Loc]) -> tuple[Any, dict[Loc, list[int]]]:
    """`data` less every location in `cut`, and for each list the original index of each item
    kept (to map locations in the result back to the file)."""
    kept: dict[Loc, list[int]] = {}

    def walk(value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*loc, k)) for k, v in value.items() if (*loc, k) not in cut}
        if isinstance(value, list):
            kept[loc] = [i for i in range(len(value)) if (*loc, i) not in cut]
            return [walk(value[i], (*loc, i)) for i in kept[loc]]
        return value

    return walk(data, ()), kept


def _original(loc: Loc, kept: dict[Loc, list[int]]) -> Loc:
    out: Loc = ()
    for part in loc:
        indices = kept.get(out)
        if indices is not None and isinstance(part, int) and 0 <= part < len(indices):
            part = indices[part]
        out = (*out, part)
    return out


def _cut_point(data: Any, loc: Loc, cut: set[Loc]) -> Loc | None:
    """What to cut for an error at `loc`: the deepest part of it the file holds, or its parent
    when that was cut already (a required key, now missing). None at the top."""
    node: Any = data
    found: Loc = ()
    for part in loc:
        held = part in node if isinstance(node, dict) else _in_list(node, part)
        if not held:
            break
        node, found = node[part], (*found, part)
    while found in cut:
        found = found[:-1]
    return found or None


def _in_list(node: Any, part: object) -> bool:
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _names_cut(data: Any, cut: set[Loc]) -> set[str]:
    """What cross-check messages would name if they were about something cut: the `name` of
    every item cut (quoted `'b'` in a message), and every key cut (a variable an `extract`
    would have defined, `{{order_id}}` in a message)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(k for k in node if isinstance(k, str))
            if isinstance(node.get("name"), str):
                names.add(node["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for loc in cut:
        node = data
        for part in loc:
            node = node[part]
        if loc and isinstance(loc[-1], str):
            names.add(loc[-1])
        if isinstance(node, str) and loc and loc[-1] == "name":
            names.add(node)
        walk(node)
    return names


_MENTIONS = re.compile(r"'([^']*)'|\{\{([^{}]*)\}\}")


def _about_cut(message: str, names: set[str]) -> bool:
    """Whether a message names something cut, quoted (`'b'`) or as a template (`{{b}}`)."""
    return any((quoted or template) in names for quoted, template in _MENTIONS.findall(message))


def _from_pydantic(err: Any, smap: SourceMap) -> ConfigError:
    # pydantic reports aliases in `loc` (we validate by alias), which are the YAML keys.
    loc = _loc(err)
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    message = message.removeprefix("Value error, ")
    return smap.error(loc, message)


def models_in(value: object, loc: Loc = ()) -> Iterator[tuple[Loc, BaseModel]]:
    """Every config model nested in `value` (itself included), with its location in the file
    (YAML keys, i.e. aliases)."""
    if isinstance(value, BaseModel):
        yield loc, value
        for name, info in type(value).model_fields.items():
            yield from models_in(getattr(value, name), (*loc, info.alias or name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from models_in(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str | int):
                yield from models_in(item, (*loc, key))


# Header values are secrets (API keys, tenant tokens) unless the header is one of these, whose
# values are plain protocol words that would only make messages unreadable if redacted.
PUBLIC_HEADERS = frozenset(
    {"accept", "accept-language", "accept-encoding", "content-type", "cache-control", "user-agent"}
)


def secrets_in(config: Config) -> set[str]:
    """Every secret value the config holds: each `Secret` field (tokens, client secrets, DSNs,
    header values but PUBLIC_HEADERS) and the password inside a secret URL (a DSN's password
    turns up alone in a driver's error text)."""
    found: set[str] = set()
    for _, model in models_in(config):
        for name in type(model).model_fields:
            value = getattr(model, name)
            items: list[tuple[str | None, object]]
            if isinstance(value, dict):
                items = [(str(k), v) for k, v in value.items()]
            else:
                items = [(None, value)]
            for key, item in items:
                if not isinstance(item, SecretStr):
                    continue
                if key is not None and name == "headers" and key.lower() in PUBLIC_HEADERS:
                    continue
                secret = item.get_secret_value()
                found.add(secret)
                found.update(_url_password(secret))
    return found


def _url_password(value: str) -> list[str]:
    try:
        password = urlsplit(value.strip()).password if "://" in value else None
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def semantic_errors(config: Config) -> Iterator[tuple[Loc, str]]:
    """Rules that span several fields: unique names, references, template variables. The
    agent's own keys are checked here; each kind checks its section (`Kind.check_config`)."""
    for loc, model in models_in(config):
        if isinstance(model, Scheduled) and (message := model.timeout_error()) is not None:
            yield (*loc, "timeout"), message
        headers = getattr(model, "headers", None)
        if isinstance(headers, dict):
            for name, value in headers.items():
                yield from _header_errors((*loc, "headers", name), name, value)
    yield from duplicates(("sites",), [s.name for s in config.sites], "site")
    site_names = {s.name for s in config.sites}
    if not any(s.role == "primary" for s in config.sites):
        yield ("sites",), "at least one site must have role: primary"
    for index, site in enumerate(config.sites):
        if site.ca_file is not None and not Path(site.ca_file).is_file():
            yield ("sites", index, "ca_file"), f"file not found: {site.ca_file}"
    where = env(config)
    for kind in KINDS:
        section = config.section(kind)
        base: Loc = tuple(kind.key.split("."))
        if kind.naming is not None:
            noun, name_of = kind.naming
            yield from duplicates(base, [name_of(item) for item in section], noun)
        for loc, message in kind.check_config(section, where):
            yield (*base, *loc) if kind.top_level else (*base, *loc[1:]), message
    yield from duplicates(("peers",), [p.name for p in config.peers], "peer")
    yield from duplicates(
        ("telemetry", "otlp"), [c.name for c in config.telemetry.otlp], "OTLP collector"
    )
    yield from duplicates(("slos",), [s.name for s in config.slos], "slo")
    journey_names = where.names.get("journeys", frozenset())
    for s, slo in enumerate(config.slos):
        if slo.journey not in journey_names:
            yield ("slos", s, "journey"), f"unknown journey {slo.journey!r}"
    for p, peer in enumerate(config.peers):
        if peer.name == config.agent.vantage:
            yield ("peers", p, "name"), "a peer cannot have this agent's own vantage name"
    if config.verdict.quorum is not None and config.verdict.quorum > len(config.vantages):
        yield (
            ("verdict", "quorum"),
            f"{config.verdict.quorum} is more than the {len(config.vantages)} vantage(s) "
            "(this agent and its peers): no verdict could ever be reached",
        )
    yield from duplicates(("maintenance",), [m.name for m in config.maintenance], "window")
    for m, window in enumerate(config.maintenance):
        for s, site_name in enumerate(window.sites):
            if site_name not in site_names:
                yield ("maintenance", m, "sites", s), f"unknown site {site_name!r}"
    tokens = config.agent.admin_token, config.agent.view_token
    if (
        tokens[0] is not None
        and tokens[1] is not None
        and tokens[0].get_secret_value() == tokens[1].get_secret_value()
    ):
        yield (
            ("agent", "admin_token"),
            "must differ from agent.view_token: every peer holds the view token",
        )


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header_errors(loc: Loc, name: object, value: object) -> Iterator[tuple[Loc, str]]:
    """A header must be sendable as written: a token for a name, and no CR, LF or NUL (nor any
    other control character but tab) in the value, which could split the request."""
    if not isinstance(name, str) or not _TOKEN.match(name):
        yield loc, "not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
        yield loc, "the value contains a control character (CR, LF, NUL...): not allowed"
