"""Hostile and clumsy configs: every one refused with `FILE:LINE: key: message`, no traceback,
bounded memory, and no resolved secret in any message. `validate` runs on untrusted pull
requests in CI, so these go through the real command line, in a child process."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from failsight.agent.config import load_config
from failsight.agent.yamlsource import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_VALUES, ConfigInvalid

BASE = """\
agent:
  vantage: aws-use1
sites:
  - name: aws-use1
    role: primary
    base_url: http://127.0.0.1:1
"""

SECRET = "SeCrEt-4c1e-very-private"

# The child's peak memory may not exceed this: a bomb or a huge file is refused, not built.
MEMORY_CEILING_KB = 300 * 1024


def validate(path: Path, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """`failsight validate PATH` in a child: exit code, all output, the child's peak RSS (KB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(
        [sys.executable, "-m", "failsight", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest of any child so far: only a rise is attributable.
    return done.returncode, done.stdout + done.stderr, max(peak, before)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    return [str(e).replace(str(path), "F") for e in info.value.errors]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".nan", "must be a finite duration"),
        (".inf", "must be a finite duration"),
        ("-.inf", "must be a finite duration"),
        ("1.0e+300", "must be at most 1d"),
        ("1000000d", "must be at most 1d"),
        ("25h", "must be at most 1d"),
        ("50ms", "must be at least 100ms"),
        ("0", "must be greater than zero"),
        ("-5", "must be greater than zero"),
        ("9" * 400, "must be a finite duration"),
        ("'1e5s'", "invalid duration"),
        ("true", "expected a duration"),
        ("[1, 2]", "expected a duration"),
    ],
)
def test_an_interval_is_finite_and_within_its_bounds(
    tmp_path: Path, value: str, message: str
) -> None:
    text = BASE + f"idps:\n  - name: corp\n    issuer: https://idp.test\n    interval: {value}\n"
    errors = errors_of(write(tmp_path, text))
    line = [e for e in errors if "idps.0.interval" in e]
    assert line and line[0].startswith("F:10: idps.0.interval: ") and message in line[0], errors


def test_every_duration_is_finite_and_bounded(tmp_path: Path) -> None:
    text = BASE + (
        "verdict:\n  peer_stale_after: .nan\n  flap_half_life: 400d\n  confirm_interval: 10ms\n"
    )
    assert errors_of(write(tmp_path, text)) == [
        "F:8: verdict.peer_stale_after: must be a finite duration such as 15s, 500ms or 2m",
        "F:9: verdict.flap_half_life: must be at most 366d",
        "F:10: verdict.confirm_interval: must be at least 100ms",
    ]


def test_a_timeout_longer_than_its_interval_is_refused_and_a_default_one_is_lowered(
    tmp_path: Path,
) -> None:
    base = BASE.replace(
        "  vantage: aws-use1\n",
        "  vantage: aws-use1\n  self_check:\n    url: http://127.0.0.1:1\n    interval: 2s\n",
    )
    assert errors_of(write(tmp_path, base.replace("2s\n", "2s\n    timeout: 5s\n"))) == [
        "F:6: agent.self_check.timeout: 5s is longer than the interval (2s): a run would "
        "overlap the next one"
    ]
    config = load_config(write(tmp_path, base))
    assert config.agent.self_check is not None
    assert (config.agent.self_check.interval, config.agent.self_check.timeout) == (2.0, 2.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "cannot read the value as !!int"),
        ("!!timestamp x", "cannot read the value as !!timestamp"),
        ("!custom 1", "unsupported YAML tag !custom"),
        ("!!python/name:os.system ''", "unsupported YAML tag !!python/name:os.system"),
        ("!!python/object/apply:os.system ['true']", "unsupported YAML tag"),
        ("!!binary aGVsbG8=", "unsupported YAML tag !!binary"),
        ("!!set {a: null}", "unsupported YAML tag !!set"),
        ("!!int " + "9" * 5000, "cannot read the value as !!int"),
    ],
)
def test_a_yaml_tag_is_a_line_not_a_traceback(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, BASE + f"verdict:\n  flap_half_life: {value}\n")
    code, output, _ = validate(path)
    assert code == 2, output
    assert "Traceback" not in output
    assert output.startswith(f"{path}:8: verdict.flap_half_life: {message}"), output


def test_deep_nesting_is_refused_with_its_line(tmp_path: Path) -> None:
    for depth in (MAX_DEPTH + 1, 3000, 5000):
        path = write(tmp_path, BASE + "x: " + "[" * depth + "]" * depth + "\n")
        code, output, _ = validate(path)
        assert (code, "Traceback" in output) == (2, False), output
        assert output.startswith(f"{path}:7: (top): "), output
        assert "nest" in output, output
    path = write(tmp_path, BASE + "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
    code, output, _ = validate(path)
    assert (code, "Traceback" in output) == (2, False), output


def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    path = write(tmp_path, "\n".join(lines) + "\n")
    code, output, peak = validate(path)
    assert code == 2 and "Traceback" not in output, output
    assert f"expands to more than {MAX_VALUES} values" in output, output
    assert peak < MEMORY_CEILING_KB, peak


def test_a_huge_config_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as out:
        out.write(BASE + "x: '")
        chunk = "a" * 1_048_576
        for _ in range(50):
            out.write(chunk)
        out.write("'\n")
    code, output, peak = validate(path)
    assert code == 2 and "Traceback" not in output, output
    assert output.strip() == (
        f"{path}:1: (top): the config is larger than the limit of {MAX_CONFIG_BYTES // 1024} KiB"
    )
    assert peak < MEMORY_CEILING_KB, peak


def test_files_that_are_not_files_are_refused(tmp_path: Path) -> None:
    code, output, _ = validate(Path("/dev/zero"))
    assert (code, output.strip()) == (
        2,
        "/dev/zero:1: (top): cannot read the config: not a regular file",
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = write(tmp_path, BASE + f"    headers: {{X-Key: '${{file:{fifo}}}'}}\n")
    code, output, _ = validate(path)
    assert code == 2 and "Traceback" not in output, output
    assert f"cannot read secret file {fifo}: not a regular file" in output, output


SITE = "  - {name: 'REF', role: standby, base_url: 'http://h'}\n"
STEP = "journeys:\n  - name: j\n    steps:\n      - {name: s, path: /, FIELD}\n"


@pytest.mark.parametrize(
    "text",
    [
        BASE + "idps:\n  - name: corp\n    issuer: https://idp.test\n    interval: 'REF'\n",
        BASE + "journeys:\n  - name: j\n    sites: ['REF']\n    steps: [{name: s, path: /}]\n",
        BASE + STEP.replace("FIELD", "extract: {x: '$[REF'}"),
        BASE + STEP.replace("FIELD", "expect: {status: 'REF'}"),
        BASE + STEP.replace("FIELD", "expect: {headers: [{name: a, regex: '(REF'}]}"),
        BASE + SITE + SITE,
        BASE.replace("  vantage: aws-use1", "  vantage: aws-use1\n  listen: 'REF'"),
    ],
    ids=["interval", "site-list", "json-path", "status", "regex", "duplicate-name", "listen"],
)
def test_a_secret_in_a_field_that_quotes_its_value_is_never_printed(
    tmp_path: Path, text: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    for ref in ("${env:FS_HOSTILE_SECRET}", f"${{file:{secret_file}}}"):
        path = write(tmp_path, text.replace("REF", ref))
        code, output, _ = validate(path, {"FS_HOSTILE_SECRET": SECRET})
        assert code == 2 and "Traceback" not in output, output
        assert SECRET not in output and SECRET[:12] not in output, output


@pytest.mark.parametrize("bad", ["a\\r\\nX-Injected: 1", "a\\nb", "a\\x00b", "a\\x7fb"])
def test_a_header_value_with_a_control_character_is_refused_with_its_line(
    tmp_path: Path, bad: str
) -> None:
    text = BASE + textwrap.dedent(
        f"""\
        journeys:
          - name: j
            steps:
              - name: s
                path: /
                headers: {{X-Tenant: "{bad}"}}
        """
    )
    assert errors_of(write(tmp_path, text)) == [
        "F:12: journeys.0.steps.0.headers.X-Tenant: the value contains a control character "
        "(CR, LF, NUL...): not allowed"
    ]


def test_a_header_name_must_be_a_token(tmp_path: Path) -> None:
    text = BASE.replace(
        "    base_url: http://127.0.0.1:1\n",
        "    base_url: http://127.0.0.1:1\n    headers: {'X Bad:': v, 'X-Ok': v}\n",
    )
    assert errors_of(write(tmp_path, text)) == [
        "F:7: sites.0.headers.X Bad:: not a valid HTTP header name "
        "(letters, digits and !#$%&'*+-.^_`|~ only)"
    ]
