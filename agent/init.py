"""`failsight init`: a commented starter config for the sites given, checked before it is
printed."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from failsight.agent.config import load_config
from failsight.agent.yamlsource import ConfigError, ConfigInvalid
from failsight.core.redact import excerpt

DEFAULT_VANTAGE = "laptop"
# Not the agent's own default (9747): `make demo`'s agents hold 9747-9749, and a starter config
# must run as is beside the demo it is tried against.
DEFAULT_LISTEN = "127.0.0.1:9750"


class InitRefused(ValueError):
    """What `failsight init` was given cannot make a config; the message is one line."""


def parse_site(text: str) -> tuple[str, str]:
    """`NAME=URL`, as `--site` takes it, split at the first `=` (a URL may hold more)."""
    name, sep, url = text.partition("=")
    if not sep or not name:
        raise InitRefused(
            f"--site {_shown(text)}: expected NAME=URL, e.g. aws-use1=https://orders.example.com"
        )
    return name, url


def starter_config(
    sites: Sequence[tuple[str, str]],
    vantage: str = DEFAULT_VANTAGE,
    listen: str = DEFAULT_LISTEN,
) -> str:
    """The commented config for `sites` (the first the primary, the others standbys), valid
    as returned: it is loaded the way `failsight validate` loads a file before it is handed
    out. Raises InitRefused naming the option at fault."""
    if not sites:
        raise InitRefused("give at least one --site NAME=URL (the first one is the primary)")
    given = [("--vantage", vantage), ("--listen", listen)]
    given += [(f"--site {_shown(name)}", value) for name, url in sites for value in (name, url)]
    for option, value in given:
        # The loader reads `${env:…}`/`${file:…}` in any string: the config printed would not
        # say what was asked for.
        if "${" in value:
            raise InitRefused(f"{option}: must not contain '${{'")
    seen: set[str] = set()
    for name, url in sites:
        # The URL is never quoted back: it may carry credentials (https://user:pass@host).
        if not _is_http_url(url):
            raise InitRefused(
                f"--site {_shown(name)}: expected an http:// or https:// URL, "
                "e.g. https://orders.example.com"
            )
        if name in seen:
            raise InitRefused(f"--site {_shown(name)} is given twice: site names must be unique")
        seen.add(name)
    text = _render(sites, vantage, listen)
    _check(text, sites)
    return text


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port out of range, which the config itself would take
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _shown(value: str) -> str:
    """A value from the command line, for a message: as typed when it is one plain word,
    quoted when blanks or unprintable characters would make the message ambiguous."""
    text = excerpt(value)
    plain = text == value != "" and value.isprintable() and not any(c.isspace() for c in value)
    return text if plain else repr(text)


def _check(text: str, sites: Sequence[tuple[str, str]]) -> None:
    """Load `text` as a config file; every problem becomes InitRefused naming its option."""
    with tempfile.TemporaryDirectory(prefix="failsight-init-") as tmp:
        path = Path(tmp, "config.yaml")
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigInvalid as exc:
            raise InitRefused("; ".join(_blame(e, sites) for e in exc.errors)) from None


def _blame(error: ConfigError, sites: Sequence[tuple[str, str]]) -> str:
    match error.loc:
        case ("agent", "vantage" | "listen" as key, *_):
            return f"--{key}: {error.message}"
        case ("sites", int(index), *_) if index < len(sites):
            return f"--site {_shown(sites[index][0])}: {error.message}"
    # Not from a value given on the command line: a fault of this module's template.
    return f"the starter config is invalid: {error}"


def _yaml_string(value: str) -> str:
    """`value` as a YAML double-quoted scalar. JSON's escapes are valid YAML; characters that
    are not printable are escaped too, since YAML would read some of them (U+0085, U+2028) as
    line breaks and fold them away."""
    return "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
        for c in json.dumps(value, ensure_ascii=False)
    )


def _render(sites: Sequence[tuple[str, str]], vantage: str, listen: str) -> str:
    site_lines = "\n".join(
        f"  - name: {_yaml_string(name)}\n"
        f"    role: {'primary' if index == 0 else 'standby'}\n"
        f"    base_url: {_yaml_string(url)}"
        for index, (name, url) in enumerate(sites)
    )
    return f"""\
# A starter failsight config, written by `failsight init`. It runs as is against the simulated
# platform of `make demo`; for a real platform, change what the comments below point at.
# Every key is described in docs/configuration.md. Then:
#   failsight validate FILE          check it
#   failsight once --config FILE     run each check once and print the results
#   failsight run --config FILE      run the agent (status page and API on `listen`)

agent:
  # Where this agent looks from: one vote in the quorum. In production, the cloud or region
  # it runs in (e.g. aws-use1), the same name its peers list it under.
  vantage: {_yaml_string(vantage)}
  # The HTTP API: verdicts (/v1/sites/NAME/health), the status page, /metrics for Prometheus.
  # 9750 keeps clear of `make demo`'s agents (9747-9749); an agent's usual port is 9747.
  listen: {_yaml_string(listen)}
  # Where holds, failover latches and the cleanup journal outlive a restart; in production:
  # state_dir: /var/lib/failsight
  # The bearer token `failsight hold` and `failsight failback` must present (without one those
  # endpoints answer 403). Keep it out of this file, e.g.:
  # admin_token: ${{file:/etc/failsight/secrets/admin-token}}   # or ${{env:FAILSIGHT_ADMIN_TOKEN}}

# The deployments of the platform: the primary, then the standbys it can fail over to.
sites:
{site_lines}

# A business journey, run against every site: real API calls in order, then the cleanup steps,
# which always run and remove what the steps created. The agent adds X-Failsight-Synthetic: 1,
# an Idempotency-Key and a traceparent to every request, so the platform can tell its
# synthetic traffic apart. These paths and assertions fit the demo platform's order API:
# replace them with calls of your own platform (and add `idp:` or `bearer_token:` for its auth).
journeys:
  - name: order-submit
    interval: 15s  # how often; the first run starts at a random point within one interval
    timeout: 10s   # for all the steps of one run; the cleanup has its own budget
    steps:
      - name: order_submit
        method: POST
        path: /api/v1/orders
        json: {{sku: SKU-1001, qty: 1, tenant: "{{{{tenant}}}}"}}
        expect:
          status: 201
          json:
            - {{path: $.status, equals: created}}
            - {{path: $.synthetic, equals: true}}
        extract: {{order_id: $.id}}  # {{{{order_id}}}} in the later steps and the cleanup
      - name: order_get
        path: /api/v1/orders/{{{{order_id}}}}
        expect:
          status: 200
          json:
            - {{path: $.id, exists: true}}
    cleanup:
      - name: cancel_order
        method: POST
        path: /api/v1/orders/{{{{order_id}}}}/cancel
        expect: {{status: [200, 404]}}  # 404: nothing left to remove

# In production one agent runs in each cloud, and each lists the others as peers: they
# exchange views, and a majority of vantages (the default quorum) must agree before a site
# is failed over. For example:
# peers:
#   - {{name: gcp-euw1, url: "https://failsight.gcp-euw1.example.com:9747"}}
#   - {{name: azure-weu, url: "https://failsight.azure-weu.example.com:9747"}}
verdict:
  # A lone agent has only its own view to count: a quorum of 1 is for trying things out.
  # Remove this line once the peers are listed.
  quorum: 1
"""
