"""The README's "Your first agent" walkthrough, run as written against a real `failsight demo`.

The commands are taken from the README itself (its first `sh` block under that heading) and run
with bash in a directory that stands for a fresh clone after `make demo`: `.venv` is the
environment these tests run in, and nothing else is there. What each `health` call prints is
compared with what the README's comments promise.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_READY = ("http://127.0.0.1:18081/healthz", "http://127.0.0.1:18082/healthz")


def walkthrough() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Your first agent\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the walkthrough's sh block is missing from README.md"
    return block.group(1)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_the_first_agent_walkthrough_runs_as_written(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
    with (tmp_path / "demo.log").open("w") as demo_log:
        demo = subprocess.Popen(
            [str(venv / "bin" / "failsight"), "demo"],
            cwd=tmp_path,
            stdout=demo_log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while not all(_up(url) for url in DEMO_READY):
                assert demo.poll() is None, (tmp_path / "demo.log").read_text()
                assert time.monotonic() < deadline, "the demo's sites never came up"
                time.sleep(0.5)
            time.sleep(1)
            # Still running: the sites that answered are this demo's, not another's.
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            # -e: a command of the walkthrough that fails (a grep finding no verdict) stops it.
            done = subprocess.run(
                ["bash", "-e", "-c", walkthrough()],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = done.stdout.splitlines()
    assert out[0] == "my-agent.yaml: ok"
    # `once`: the journey against both sites, each with its step and cleanup.
    assert [line.split()[:2] for line in out if line.startswith(("ok", "FAILED"))] == [
        ["ok", "journey/submit-order/aws-use1"],
        ["ok", "journey/submit-order/gcp-euw1"],
    ]
    assert sum("order_submit" in line and "HTTP 201" in line for line in out) == 2
    assert sum("cancel" in line and "HTTP 200" in line for line in out) == 2
    # health() prints the verdict and the status code, one per line: as the comments say.
    verdicts = [line for line in out if line.startswith('{"verdict"') or line.startswith("HTTP")]
    assert verdicts == [
        '{"verdict": "healthy"',
        "HTTP 200",
        '{"verdict": "failed_over"',
        "HTTP 503",
        '{"verdict": "failed_over"',
        "HTTP 503",
        '{"verdict": "healthy"',
        "HTTP 200",
    ], out
    assert any(line.startswith("failback aws-use1 recorded by laptop") for line in out), out
    # The synthetic orders were all cancelled: nothing lingers at the site.
    assert (tmp_path / "agent.log").stat().st_size > 0
