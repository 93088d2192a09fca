"""Business journeys: ordered HTTP steps with assertions, extraction and polling, then cleanup.

`config` holds the `journeys:` config models and the built-in variables, `untrusted` what a
target sends, parsed and quoted without trusting it (and the assertions on it), `run` one run's
steps, polls and cleanup, `check` the check of one journey at one site, and `kind` `plan`, the
config cross-checks, the metric families and the kind's descriptor `KIND`.
"""

from failsight.probes.journey.check import JourneyCheck
from failsight.probes.journey.config import (
    BUILTIN_VARIABLES,
    Expect,
    HeaderAssertion,
    JourneyConfig,
    JsonAssertion,
    Poll,
    Step,
)
from failsight.probes.journey.kind import (
    JOURNEY_DURATION,
    JOURNEY_RUNS,
    JOURNEY_SUCCESS,
    KIND,
    STEP_DURATION,
    STEP_FAILURES,
    check_config,
    gauges,
    increments,
    plan,
)
from failsight.probes.journey.run import RUN_ID_HEADER, SYNTHETIC_HEADER, VANTAGE_HEADER
from failsight.probes.journey.untrusted import (
    MAX_JSON_DEPTH,
    MAX_MESSAGE,
    MAX_QUOTED,
    REDACT_WINDOW,
    json_depth_exceeds,
    parse_json,
    printable,
    show,
)

__all__ = [
    "BUILTIN_VARIABLES",
    "JOURNEY_DURATION",
    "JOURNEY_RUNS",
    "JOURNEY_SUCCESS",
    "KIND",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE",
    "MAX_QUOTED",
    "REDACT_WINDOW",
    "RUN_ID_HEADER",
    "STEP_DURATION",
    "STEP_FAILURES",
    "SYNTHETIC_HEADER",
    "VANTAGE_HEADER",
    "Expect",
    "HeaderAssertion",
    "JourneyCheck",
    "JourneyConfig",
    "JsonAssertion",
    "Poll",
    "Step",
    "check_config",
    "gauges",
    "increments",
    "json_depth_exceeds",
    "parse_json",
    "plan",
    "printable",
    "show",
]
