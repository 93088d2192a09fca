"""What an agent loads is what its config uses: the PostgreSQL driver and the DNS library only
when a `replication` or `dns` check is configured (each is about 3 MB of RSS; bench/footprint.py
measures it), the JOSE and X.509 libraries only for `idps` and `tls`, OpenTelemetry only for
OTLP collectors. Checked in a fresh interpreter, through sys.modules: behaviour, not timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from failsight.agent.demo.postgres import REPLICA_NAME

# Imports the agent's modules, loads the config, plans its checks, builds the Agent as
# `failsight run` does, and prints which of the optional libraries are then in sys.modules.
CHILD = """
import json, sys
from failsight.agent.cli import parser
from failsight.agent.config import load_config, plan
from failsight.agent.runtime import Agent

config = load_config(sys.argv[1])
checks = plan(config)
parser()
Agent(config, sys.argv[1])
optional = ("asyncpg", "dns", "joserfc", "cryptography", "opentelemetry")
print(json.dumps({
    "checks": len(checks),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in optional),
}))
"""

SITES = [
    {"name": "aws-use1", "role": "primary", "base_url": "http://127.0.0.1:9/"},
    {"name": "gcp-euw1", "role": "standby", "base_url": "http://127.0.0.1:9/s"},
]


def journeys(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"journey{i}",
            "interval": "30s",
            "steps": [
                {"name": "list", "method": "GET", "path": "/orders", "expect": {"status": 200}},
                {"name": "create", "method": "POST", "path": "/orders", "json": {"sku": "x"}},
            ],
        }
        for i in range(n)
    ]


def loaded(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "failsight.yaml"
    path.write_text(json.dumps({"agent": {"vantage": "aws-use1"}, "sites": SITES, **config}))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_journeys_only_agent_loads_no_optional_library(tmp_path: Path) -> None:
    got = loaded(tmp_path, {"journeys": journeys(3)})
    assert got["checks"] == 6
    assert got["loaded"] == []


@pytest.mark.parametrize(
    ("section", "library"),
    [
        (
            {
                "dns": [
                    {
                        "name": "orders.example.test",
                        "resolvers": [{"name": "local", "address": "127.0.0.1", "port": 53}],
                        "answers": {"aws-use1": ["127.0.1.1"], "gcp-euw1": ["127.0.1.2"]},
                    }
                ]
            },
            "dns",
        ),
        (
            {
                "replication": [
                    {
                        "cluster": "orders",
                        "rpo": "30s",
                        "primary": {
                            "site": "aws-use1",
                            "dsn": "postgresql://monitor@127.0.0.1:9/postgres",
                        },
                        "replicas": [
                            {
                                "site": "gcp-euw1",
                                "dsn": "postgresql://monitor@127.0.0.1:9/postgres",
                                "application_name": REPLICA_NAME,
                            }
                        ],
                    }
                ]
            },
            None,
        ),
    ],
)
def test_a_configured_kind_still_loads_only_what_it_uses(
    tmp_path: Path, section: dict[str, Any], library: str | None
) -> None:
    # Validating a DNS config parses its names with dnspython; a replication check loads
    # asyncpg on its first run (tests/probes/test_replication.py runs it), not at start-up.
    got = loaded(tmp_path, {"journeys": journeys(1), **section})
    assert ("dns" in got["loaded"]) is (library == "dns")
    assert not any(m.startswith("asyncpg") for m in got["loaded"])
