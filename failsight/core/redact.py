"""Redaction by value: every secret this process holds is replaced by `[redacted]` in any text
that leaves it (logs, results, the API, OTLP, error messages), whatever put it there.

Redacting by value rather than by field is what makes it hold against text we do not write: a
target that echoes our request headers in its 401 body, an IdP that quotes the client secret in
its error, an exception message that carries a DSN. The agent registers its config's secrets at
load and on reload, the IdP token cache registers each token it fetches, and the config loader
uses its own instance for the values its `${env:…}`/`${file:…}` references resolved.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from failsight.core.results import DependsOn, Evidence, Remark, Result, StepResult

REDACTED = "[redacted]"

# Shorter values are not redacted: replacing every "1" or "dev" in a message would make it
# unreadable and would not protect anything that deserved the name secret.
MIN_SECRET_LENGTH = 4

# Tokens fetched at run time (IdP access tokens) are remembered up to this many, newest kept:
# an expired token is worth nothing, and the set must not grow without bound.
MAX_REMEMBERED = 32


def forms(value: str) -> set[str]:
    """The ways a secret can appear in text: as written, percent-encoded (a query string or a
    form body echoed back), and escaped inside a JSON string (a JSON body echoed back, or our
    own JSON log line) with non-ASCII characters escaped or, as the log line writes them, not."""
    if len(value) < MIN_SECRET_LENGTH:
        return set()
    out = {
        value,
        quote(value, safe=""),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return {f for f in out if len(f) >= MIN_SECRET_LENGTH}


def basic_credentials(user: str, password: str) -> str:
    """The base64 of `user:password` as sent in `Authorization: Basic` (echoed back, it is as
    good as the password)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Redactor:
    """A set of secret values, searched for in every text that leaves the process.

    One substring search per secret (CPython's two-way search: microseconds per kilobyte) beats
    one big regex alternation here: nothing to recompile on the event loop when a token is
    fetched (0.6 s for a few hundred long tokens), and several times less time per text
    (bench.journeys). Static secrets (the config's) come from `add`; tokens fetched at run time
    from `remember`, which keeps only the newest MAX_REMEMBERED. Thread-safe: the OTLP
    exporter threads and the event loop both redact, and readers take the tuple in one read.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._static: set[str] = set()
        self._dynamic: OrderedDict[str, None] = OrderedDict()
        self._ordered: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *values: str) -> None:
        new = set().union(*(forms(v) for v in values if isinstance(v, str))) - self._static
        if new:
            with self._lock:
                self._static |= new
                self._rebuild()

    def remember(self, value: str) -> None:
        new = forms(value) if isinstance(value, str) else set()
        if not new or all(f in self._dynamic or f in self._static for f in new):
            return
        with self._lock:
            for f in new:
                self._dynamic[f] = None
                self._dynamic.move_to_end(f)
            while len(self._dynamic) > MAX_REMEMBERED * 3:
                self._dynamic.popitem(last=False)
            self._rebuild()

    def clear(self) -> None:
        """Forget every secret (benchmarks compare with and without)."""
        with self._lock:
            self._static.clear()
            self._dynamic.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first: a secret that contains another is replaced whole.
        self._ordered = tuple(sorted(self._static | set(self._dynamic), key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._ordered)

    def text(self, value: str) -> str:
        """`value` with every secret replaced by `[redacted]`."""
        for secret in self._ordered:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def data(self, value: object) -> object:
        """A JSON-like value (dicts, lists, strings...) with every string redacted."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.data(v) for v in value)
        return value


REDACTOR = Redactor()
"""The process's redactor: every secret the running agent holds."""


def redact(value: str) -> str:
    """`value` with every secret the process holds replaced by `[redacted]`."""
    return REDACTOR.text(value)


def excerpt(text: str, limit: int = 64, *, unprintable: str = "?") -> str:
    """Text a target (or a peer) sent, as a message may quote it: on one line, every character
    that is not printable replaced by `unprintable`, cut to `limit` characters, every secret
    the process holds redacted before the cut (a cut secret is no longer recognised)."""
    whole = redact(text[: limit + 2048])
    shown = "".join(c if c.isprintable() else unprintable for c in whole[:limit])
    return shown + "..." if len(whole) > limit or len(text) > limit + 2048 else shown


# A query parameter is secret-looking when a word of its name (split at punctuation and
# camelCase) is one of these, in any case: `access_token`, `apiKey`, `client_secret`,
# `X-Amz-Security-Token`... It covers the OpenTelemetry conventions' own list for `url.full`
# (`AWSAccessKeyId`, `Signature`, `sig`, `X-Amz-Credential`, `X-Amz-Signature`,
# `X-Goog-Signature`); a harmless parameter redacted too is the cheaper mistake.
_SECRET_WORDS = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "code",
        "credential",
        "credentials",
        "jwt",
        "key",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "sessionid",
        "sig",
        "signature",
        "token",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def scrub_url(url: str) -> str:
    """`url` with its user and password replaced by `REDACTED:REDACTED` and the values of
    secret-looking query parameters by `REDACTED`, as the OpenTelemetry conventions ask of
    `url.full`. A step's URL carries values a journey extracted at run time (a session token in
    a query string), which no redactor knows in advance: scrubbed where the URL is recorded,
    every sink (logs, API, spans) gets the same safe form."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can take apart: redaction by value still applies
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rpartition("@")[2]
    query = "&".join(_scrubbed_parameter(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _scrubbed_parameter(parameter: str) -> str:
    key, equals, _value = parameter.partition("=")
    words = {w.lower() for w in _WORD.findall(unquote_plus(key))}
    if equals and words & _SECRET_WORDS:
        return f"{key}=REDACTED"
    return parameter


def redact_result(result: Result, redactor: Redactor = REDACTOR) -> Result:
    """The result with every secret removed from its free text: the message, each step's
    message and URL, the facts and the evidence's words. Costs nothing when the process holds
    no secret."""
    if not redactor:
        return result
    text = redactor.text

    def step(s: StepResult) -> StepResult:
        return replace(s, message=text(s.message), url=text(s.url))

    def evidence(e: Evidence) -> Evidence:
        # The evidence's words reach the verdict's reasons and the view's evidence.
        if isinstance(e, Remark):
            return replace(e, text=text(e.text))
        if isinstance(e, DependsOn):
            return replace(e, label=text(e.label), effect=text(e.effect))
        return e

    facts = redactor.data(dict(result.facts))
    return replace(
        result,
        message=text(result.message),
        steps=tuple(step(s) for s in result.steps),
        cleanup=tuple(step(s) for s in result.cleanup),
        facts=facts if isinstance(facts, dict) else result.facts,
        evidence=tuple(evidence(e) for e in result.evidence),
    )
