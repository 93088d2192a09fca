"""What is checked before the agent starts, and the one error type that stops a start-up with a
one-line message (exit 1) instead of a traceback."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from failsight.agent.config import Config
from failsight.probes import journey

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The agent cannot start for a reason the operator fixes (a busy port, a privileged port,
    an unwritable state dir). `str()` is one line naming what and where."""


def startup_problem(config: Config) -> str | None:
    """Why this config cannot start an agent on this machine, found before anything runs; and
    warnings for what it can run without."""
    state_dir = config.agent.state_dir
    if state_dir is not None:
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            # Holds, latches and the cleanup journal are written here: find out now that it
            # is writable, not at the first failover.
            with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".probe."):
                pass
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            return f"agent.state_dir {state_dir} is not a writable directory: {reason}"
    elif any(j.cleanup for j in config.section(journey.KIND)):
        log.warning(
            "agent.state_dir is not set: journeys with cleanup steps cannot record what they "
            "create, so a crash mid-journey leaves its synthetic data behind (set "
            "agent.state_dir to a persistent volume)"
        )
    return None
