"""YAML loading that remembers each key's line, and `${env:…}`/`${file:…}` secret references."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

_REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")


def _construct(node: yaml.Node) -> Any:
    # A fresh SafeLoader per scalar keeps PyYAML's own typing rules (ints, bools, dates...)
    # without sharing constructor state; config files are small, so the cost is irrelevant.
    return yaml.SafeLoader("").construct_object(node)


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a config file, printed as `FILE:LINE: path.to.key: message`."""

    file: str
    line: int
    loc: Loc
    message: str

    def __str__(self) -> str:
        path = ".".join(str(p) for p in self.loc) or "(top)"
        return f"{self.file}:{self.line}: {path}: {self.message}"


class ConfigInvalid(Exception):
    """The config was refused; `errors` holds every problem found, in file order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, [str(p) for p in e.loc]))
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass
class SourceMap:
    """Where each key or item of the parsed document was written (1-based lines)."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int:
        # A missing key is reported at its parent mapping: walk up until a known location.
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(self.file, self.line_of(loc), tuple(loc), message)


def load_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Parse a YAML file into plain data, resolving secret references, with a SourceMap.

    Raises ConfigInvalid for unreadable files, malformed YAML, duplicate keys and unresolvable
    references (all of them, not the first).
    """
    name = str(path)
    smap = SourceMap(name)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(
            [ConfigError(name, 1, (), f"cannot read file: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigInvalid([ConfigError(name, 1, (), "file is not UTF-8 text")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "malformed YAML"
        raise ConfigInvalid([ConfigError(name, line, (), f"malformed YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigInvalid([ConfigError(name, 1, (), f"malformed YAML: {exc}")]) from None
    if node is None:
        return {}, smap
    errors: list[ConfigError] = []
    data = _convert(node, (), smap, errors)
    if errors:
        raise ConfigInvalid(errors)
    return data, smap


def _convert(node: yaml.Node, loc: Loc, smap: SourceMap, errors: list[ConfigError]) -> Any:
    smap.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                errors.append(smap.error(loc, "YAML merge keys (<<) are not supported"))
                continue
            key = _construct(key_node)
            if not isinstance(key, str | int):
                errors.append(smap.error(loc, f"keys must be strings, not {type(key).__name__}"))
                continue
            child = (*loc, key)
            smap.lines[child] = key_node.start_mark.line + 1
            if key in out:
                errors.append(smap.error(child, "duplicate key"))
                continue
            out[key] = _convert(value_node, child, smap, errors)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            smap.lines[child] = item.start_mark.line + 1
            items.append(_convert(item, child, smap, errors))
        return items
    value = _construct(node)
    if isinstance(value, str) and "${" in value:
        return _resolve_references(value, loc, smap, errors)
    return value


def _resolve_references(value: str, loc: Loc, smap: SourceMap, errors: list[ConfigError]) -> str:
    """Replace `${env:NAME}` and `${file:/path}`. Messages name the reference, never its value."""

    def substitute(match: re.Match[str]) -> str:
        source, ref = match.group(1), match.group(2).strip()
        if source == "env":
            resolved = os.environ.get(ref)
            if resolved is None:
                errors.append(smap.error(loc, f"environment variable {ref} is not set"))
                return ""
            return resolved
        try:
            return Path(ref).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            errors.append(smap.error(loc, f"cannot read secret file {ref}: {exc.strerror}"))
        except UnicodeDecodeError:
            errors.append(smap.error(loc, f"secret file {ref} is not UTF-8 text"))
        return ""

    return _REFERENCE.sub(substitute, value)
