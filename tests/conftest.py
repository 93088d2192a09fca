"""Shared pytest set-up: real servers come from tests/fixtures, registered here."""

pytest_plugins: list[str] = []
