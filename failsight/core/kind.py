"""The `Kind` descriptor: everything the agent needs to know about one kind of check.

Each probe module exports one `KIND`; probes/registry.py lists them. The agent assembles the
config model, the checks, the metric catalogue (and so /metrics, OTLP and docs/metrics.md),
the config cross-checks and the verdict's dependency groups by iterating over kinds, so that
nothing outside a kind's module branches on its name. What a result means to the view and the
verdict travels as typed evidence on the result (core.results), not as facts parsed back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, SecretStr

from failsight.core.check import Check
from failsight.core.results import Result
from failsight.core.telemetry import MetricSpec, Sample

Loc = tuple[str | int, ...]
"""Where a value sits in the config: YAML keys and list indexes."""

C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class SiteRef:
    """A configured site, as kinds see it."""

    name: str
    role: str  # "primary" or "standby"
    base_url: str
    ca_file: str | None = None
    tls_verify: bool = True
    headers: Mapping[str, SecretStr] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL the config points at (a site, an IdP's issuer): the TLS kind checks each one."""

    name: str  # e.g. "site/aws-use1", "idp/okta"
    url: str
    ca_file: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class Env:
    """What a kind sees of the rest of the config when it plans checks or checks references."""

    vantage: str
    sites: tuple[SiteRef, ...]
    # The names configured in each section, by config key ("idps" -> {"okta"}), so a kind can
    # check its references to another kind's objects without importing that kind.
    names: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Every endpoint the config points at: the sites', then each kind's `endpoints`.
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def site_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.sites)


def duplicates(loc: Loc, names: Sequence[str], what: str) -> Iterator[tuple[Loc, str]]:
    """A `duplicate {what} name` error at each name's last occurrence (loc + (index, name))."""
    for name, count in Counter(names).items():
        if count > 1:
            index = len(names) - 1 - list(names)[::-1].index(name)
            yield (*loc, index, "name"), f"duplicate {what} name {name!r}"


def _no_checks(section: Sequence[C], env: Env) -> Iterator[tuple[Loc, str]]:
    return iter(())


def _no_endpoints(section: Sequence[C]) -> Iterator[Endpoint]:
    return iter(())


def _no_samples(result: Result) -> Iterator[Sample]:
    return iter(())


@dataclass(frozen=True, slots=True)
class Kind(Generic[C]):
    """One kind of check. `C` is its config model (one item of its config section)."""

    name: str  # Result.kind and the `kind` label, e.g. "journey"
    # The config key of its section: a top-level list (`journeys`), or a dotted path to one
    # optional object configured elsewhere (`agent.self_check`).
    key: str
    model: type[C]
    # The section (in file order) -> this kind's checks, each name unique.
    plan: Callable[[Sequence[C], Env], list[Check]]
    summary: str  # one line for the docs
    metrics: tuple[MetricSpec, ...] = ()
    # What each configured object is called, for duplicate-name errors: (noun, name of).
    naming: tuple[str, Callable[[C], str]] | None = None
    # Cross-references and rules spanning fields, as (location inside the section, message):
    # the location starts with the item's index.
    check_config: Callable[[Sequence[C], Env], Iterable[tuple[Loc, str]]] = _no_checks
    # URLs its objects point at, for the TLS kind and anything else that checks endpoints.
    endpoints: Callable[[Sequence[C]], Iterable[Endpoint]] = _no_endpoints
    # Extra gauges a result sets (beyond its `measurements`), and its counter increments and
    # histogram observations.
    gauges: Callable[[Result], Iterable[Sample]] = _no_samples
    increments: Callable[[Result], Iterable[Sample]] = _no_samples
    # The key its latest results are listed under in the verdict's `dependencies` (None: they
    # are not a shared dependency of the sites).
    dependency_group: str | None = None

    @property
    def top_level(self) -> bool:
        return "." not in self.key
