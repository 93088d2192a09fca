"""The one list of check kinds. Adding a kind is its module and one line here."""

from __future__ import annotations

from typing import Any

from failsight.core.kind import Kind
from failsight.probes import dns, idp, journey, replication, selfcheck, tcp, tls

KINDS: tuple[Kind[Any], ...] = (
    journey.KIND,
    replication.KIND,
    idp.KIND,
    dns.KIND,
    tls.KIND,
    selfcheck.KIND,
    tcp.KIND,
)
