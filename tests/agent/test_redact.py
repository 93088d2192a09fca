"""Redaction by value: every form a secret can take in echoed text, longest first, bounded."""

from __future__ import annotations

import json
from urllib.parse import quote

from failsight.core.redact import (
    MAX_REMEMBERED,
    REDACTED,
    Redactor,
    basic_credentials,
    redact_result,
)
from failsight.core.results import DependsOn, Reason, Remark, Result, VantageReach


def test_every_form_of_a_secret_is_redacted_and_the_longest_wins() -> None:
    secret = 'p@ss "word"/+&'
    r = Redactor([secret, "abcd", "abcdef"])
    for form in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1]):
        assert r.text(f"before {form} after") == f"before {REDACTED} after"
    assert r.text("abcdef abcd abc") == f"{REDACTED} {REDACTED} abc"
    assert r.data({"k": ["abcd", 1, {"abcdef": None}]}) == {"k": [REDACTED, 1, {REDACTED: None}]}


def test_short_values_are_not_secrets_and_an_empty_redactor_changes_nothing() -> None:
    assert Redactor(["abc"]).text("abc") == "abc"
    assert not Redactor()
    assert Redactor().text("anything") == "anything"


def test_basic_credentials_are_redacted_as_sent() -> None:
    header = basic_credentials("client", "s3cr3t")
    r = Redactor([header])
    assert r.text(f"Authorization: Basic {header}") == f"Authorization: Basic {REDACTED}"


def test_remembered_tokens_are_bounded_newest_kept() -> None:
    r = Redactor()
    tokens = [f"token-{i:04d}-xyz" for i in range(MAX_REMEMBERED * 4)]
    for token in tokens:
        r.remember(token)
    assert r.text(tokens[-1]) == REDACTED
    assert r.text(tokens[0]) == tokens[0]


def test_a_result_s_evidence_is_redacted_with_its_text() -> None:
    secret = "s3cret-token-value"
    redactor = Redactor({secret})
    result = Result(
        check="idp/okta",
        kind="idp",
        target="okta",
        ok=False,
        started_at=0.0,
        duration=0.1,
        run_id="r",
        message=f"echoed {secret}",
        evidence=(
            Remark(None, f"IdP okta is failing: echoed {secret}"),
            DependsOn("idp/okta", f"IdP {secret}", Reason.AUTH, f"journey {secret} fails"),
            VantageReach(),
        ),
    )
    clean = redact_result(result, redactor)
    assert secret not in repr(clean)
    assert isinstance(clean.evidence[0], Remark)
    assert clean.evidence[0].text.startswith("IdP okta is failing: echoed ")
    assert clean.evidence[2] == VantageReach()
