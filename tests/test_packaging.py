"""The package's metadata: what PyPI and `pip show` display, and a build without warnings."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# pip's own chatter about this machine (its index locations, its verbose build steps), not
# the build backend complaining about the project.
_PIP_NOISE = re.compile(r"byte-compiling is disabled|^WARNING: Location '.*' is ignored")


def test_the_wheel_builds_without_warnings_and_carries_complete_metadata(tmp_path: Path) -> None:
    # -v: pip shows the backend's output, where setuptools prints its deprecation warnings
    # (a licence written as a TOML table printed 30 lines of them on every fresh install).
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if re.search(r"warning|deprecat", line, re.IGNORECASE) and not _PIP_NOISE.search(line)
    ]
    assert complaints == []
    (wheel,) = tmp_path.glob("failsight-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(name))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License"] is None  # the deprecated free-text field is gone
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # SPDX expression instead
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
