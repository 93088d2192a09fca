"""The TCP connection pieces the socket-level kinds (tls, tcp) share."""

from __future__ import annotations

import asyncio
import os
import socket

from failsight.core.results import CheckFailure, Reason


def os_error(exc: OSError) -> str:
    """An OSError in a few words. asyncio's connect errors carry the errno but word their
    strerror as "Connect call failed ('10.0.0.1', 5672)"; trying several addresses, it raises
    one without an errno."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


async def open_tcp(
    host: str,
    port: int,
    deadline: float,
    *,
    within: float,
    where: str = "",
    phase: str = "",
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection made by `deadline` (the loop's clock), its failures classified: none
    in time is `timeout` (after `within` seconds, as the config says), a name that does not
    resolve is `dns`, refused or unreachable is `connect`. `where` prefixes each message
    (`host:port: `), `phase` names the phase a timeout cut short."""
    try:
        async with asyncio.timeout_at(deadline):
            return await asyncio.open_connection(host, port)
    except TimeoutError:
        cut = f" (phase {phase})" if phase else ""
        raise CheckFailure(
            Reason.TIMEOUT, f"{where}no TCP connection within {within:g}s{cut}"
        ) from None
    except socket.gaierror as exc:
        raise CheckFailure(
            Reason.DNS, f"{where}cannot resolve {host}: {exc.strerror or exc}"
        ) from None
    except OSError as exc:
        raise CheckFailure(Reason.CONNECT, f"{where}cannot connect: {os_error(exc)}") from None
