"""The demo's status lines: one per site, printed on change only, showing the verdict together
with the views that verdict was judged from."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import pytest

from failsight.agent.config import load_config
from failsight.agent.demo.run import DEMO_CONFIG, StatusLines, judged, status_line, vantage_configs
from failsight.agent.peers import PeerState
from failsight.agent.runtime import Agent
from failsight.agent.verdict import SiteVerdict, decide
from failsight.agent.view import SiteOpinion, SiteState, VantageView
from tests.factories import journey_result

PRIMARY, STANDBY = "aws-use1", "gcp-euw1"
SITES = ((PRIMARY, "primary"), (STANDBY, "standby"))
VANTAGES = ("aws-use1", "gcp-euw1", "azure-weu")
NOW = 1_000_000.0


def view(vantage: str, *, at: float = NOW, primary: str = "up", standby: str = "up") -> VantageView:
    """A vantage's view; its last runs are recent, so a standby it sees up vouches for it."""
    states = {PRIMARY: SiteState(primary), STANDBY: SiteState(standby)}
    failing = all(s is SiteState.DOWN for s in states.values())
    return VantageView(
        vantage,
        at,
        {
            site: SiteOpinion(state, since=at - 10, last_run_at=at, failures=int(failing))
            for site, state in states.items()
        },
        every_site_failing=failing,
    )


def judge(
    views: list[VantageView],
    previous: Mapping[str, SiteVerdict] | None = None,
    now: float = NOW,
) -> dict[str, SiteVerdict]:
    """The verdict module's own judgement, as an agent makes it (quorum 2 of 3)."""
    return decide(SITES, views, quorum=2, stale_after=15, now=now, previous=previous)


def everyone(primary: str = "up") -> list[VantageView]:
    return [view(v, primary=primary) for v in VANTAGES]


def test_a_healthy_site_shows_its_views_and_no_reason() -> None:
    views = everyone()
    assert status_line(PRIMARY, judge(views)[PRIMARY], views) == (
        "site aws-use1: healthy  views aws-use1→up gcp-euw1→up azure-weu→up"
    )


def test_a_failover_shows_every_down_view_and_the_reason() -> None:
    before = judge(everyone())
    views = everyone(primary="down")
    assert status_line(PRIMARY, judge(views, before)[PRIMARY], views) == (
        "site aws-use1: failover_recommended  views aws-use1→down gcp-euw1→down azure-weu→down"
        "  (reason: down in 3 of 3 views (quorum 2))"
    )


def test_degraded_always_says_why() -> None:
    views = [view("aws-use1"), view("gcp-euw1"), view("azure-weu", primary="degraded")]
    assert status_line(PRIMARY, judge(views)[PRIMARY], views) == (
        "site aws-use1: degraded  views aws-use1→up gcp-euw1→up azure-weu→degraded"
        "  (reason: 0 of 3 views see it down (2 needed): not a failover; failing or recovering "
        "from azure-weu)"
    )


def test_an_impaired_vantage_is_marked_and_a_stale_one_says_so() -> None:
    views = [
        view("aws-use1"),
        view("gcp-euw1", at=NOW - 60),
        view("azure-weu", primary="down", standby="down"),
    ]
    verdicts = judge(views)
    assert [status_line(site, verdicts[site], views) for site in (PRIMARY, STANDBY)] == [
        "site aws-use1: unknown  views aws-use1→up gcp-euw1→stale azure-weu→down(impaired)"
        "  (reason: only 1 fresh, unimpaired view(s); 2 needed to judge)",
        "site gcp-euw1: unknown  views aws-use1→up gcp-euw1→stale azure-weu→down(impaired)"
        "  (reason: only 1 fresh, unimpaired view(s); 2 needed to judge)",
    ]


def test_lines_are_printed_only_when_something_changed() -> None:
    lines = StatusLines()
    calm = everyone()
    verdicts = judge(calm)
    assert lines.changed(verdicts, calm) == [
        "site aws-use1: healthy  views aws-use1→up gcp-euw1→up azure-weu→up",
        "site gcp-euw1: healthy  views aws-use1→up gcp-euw1→up azure-weu→up",
    ]
    # Judged again later, the same picture: nothing to print.
    for later in (1.0, 5.0):
        calm = [view(v, at=NOW + later) for v in VANTAGES]
        verdicts = judge(calm, verdicts, now=NOW + later)
        assert lines.changed(verdicts, calm) == []

    # One vantage's view of one site changes: that site's line, and only it.
    wobbly = [view("aws-use1"), view("gcp-euw1"), view("azure-weu", primary="degraded")]
    verdicts = judge(wobbly, verdicts, now=NOW + 6)
    (line,) = lines.changed(verdicts, wobbly)
    assert line.startswith("site aws-use1: degraded  views aws-use1→up gcp-euw1→up azure-weu→deg")
    assert "(reason: 0 of 3 views see it down (2 needed)" in line
    assert lines.changed(verdicts, wobbly) == []

    # The vantage loses its network: impaired, it no longer votes; both sites' lines change.
    cut_off = [
        view("aws-use1"),
        view("gcp-euw1"),
        view("azure-weu", primary="down", standby="down"),
    ]
    verdicts = judge(cut_off, verdicts, now=NOW + 7)
    assert lines.changed(verdicts, cut_off) == [
        "site aws-use1: healthy  views aws-use1→up gcp-euw1→up azure-weu→down(impaired)",
        "site gcp-euw1: healthy  views aws-use1→up gcp-euw1→up azure-weu→down(impaired)",
    ]
    assert lines.changed(verdicts, cut_off) == []


# -- the same judgement, from real agents ---------------------------------------------------


def fetch(by: Agent, peer: Agent) -> None:
    """What `by`'s peer poller does with `peer`'s /v1/view answer: the same wire format."""
    name = peer.config.agent.vantage
    body = json.loads(json.dumps(peer.local_view().to_json()))
    fetched = VantageView.from_json(body, expected=name, received_at=time.time())
    by.peers.states[name] = PeerState(fetched, fetched.generated_at)


@pytest.fixture
def agents() -> list[Agent]:
    """The demo's three agents (not running: this test plays their runs and fetches)."""
    return [Agent(c) for c in vantage_configs(load_config(DEMO_CONFIG))]


def test_the_views_shown_are_the_ones_the_verdict_was_judged_from(agents: list[Agent]) -> None:
    aws, gcp, azure = agents
    # azure-weu loses its path to the primary: two failed runs make its view `down`...
    for _ in range(2):
        azure.views.handle(journey_result(PRIMARY, ok=False))
    # ...and that is the view aws-use1's agent fetches.
    fetch(aws, gcp)
    fetch(aws, azure)
    # The path comes back before the next fetch: azure-weu's own view is up again, while the
    # copy aws-use1 judges from still says down (for up to a peer poll interval).
    for _ in range(2):
        azure.views.handle(journey_result(PRIMARY, ok=True))
    assert azure.views.snapshot()[PRIMARY].state is SiteState.UP

    verdicts, views = judged(aws)
    assert verdicts[PRIMARY].quorum.vantages == {
        "aws-use1": "up",
        "gcp-euw1": "up",
        "azure-weu": "down",
    }
    lines = StatusLines()
    # Each agent's own view would read all up beside `degraded`; the views judged explain it.
    assert lines.changed(verdicts, views)[0] == (
        "site aws-use1: degraded  views aws-use1→up gcp-euw1→up azure-weu→down"
        "  (reason: 1 of 3 views see it down (2 needed): not a failover; failing or recovering "
        "from azure-weu)"
    )
    assert lines.changed(*judged(aws)) == []

    # The next fetch brings azure-weu's view up to date: the line changes with the verdict.
    fetch(aws, azure)
    assert lines.changed(*judged(aws)) == [
        "site aws-use1: healthy  views aws-use1→up gcp-euw1→up azure-weu→up"
    ]
