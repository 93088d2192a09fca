"""Start-up failures the operator fixes are one line on stderr and exit 1, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

SITES = 'sites: [{name: p, role: primary, base_url: "http://127.0.0.1:1"}]\n'


def run(config: Path) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "failsight", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr, done.stdout


def test_a_second_agent_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(f'agent: {{vantage: a, listen: "127.0.0.1:{port}"}}\n' + SITES)
        code, stderr, stdout = run(config)
    assert (code, stderr) == (
        1,
        f"failsight: cannot listen on 127.0.0.1:{port}: address already in use\n",
    )
    assert "Traceback" not in stdout


def test_an_unwritable_state_dir_stops_the_start_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(
        f'agent: {{vantage: a, listen: "127.0.0.1:0", state_dir: "{blocker}/state"}}\n' + SITES
    )
    code, stderr, stdout = run(config)
    assert (code, stderr) == (
        1,
        f"failsight: agent.state_dir {blocker}/state is not a writable directory: "
        "not a directory\n",
    )
    assert "Traceback" not in stdout


def test_a_missing_config_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, stderr, stdout = run(missing)
    assert (code, stderr, stdout) == (
        1,
        f"failsight: {missing}:1: (top): cannot read the config: no such file or directory\n",
        "",
    )
