"""YAML loading that remembers each key's line, and `${env:…}`/`${file:…}` secret references."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from failsight.core.kind import Loc
from failsight.core.redact import Redactor

_REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")


# What a config file may be: bounded, so that `validate` on an untrusted pull request cannot
# be made to eat the machine (docs/limits.md).
MAX_CONFIG_BYTES = 1_048_576
MAX_DEPTH = 64  # nested mappings and sequences
MAX_VALUES = 100_000  # values after expanding aliases (a "billion laughs" stops here)
MAX_SECRET_FILE_BYTES = 65_536

# Explicit tags a config may use: YAML's own scalar and collection types. Anything else
# (`!custom`, `!!python/name:...`, `!!binary`, `!!set`) is refused with its line.
_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# One constructor for every scalar: it keeps PyYAML's own typing rules (ints, bools, dates).
_CONSTRUCTOR = yaml.SafeLoader("")


class _Refused(Exception):
    """A document the loader will not build; `message` says why, at `line`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message

    @classmethod
    def at(cls, node: yaml.Node, message: str) -> _Refused:
        return cls(node.start_mark.line + 1, message)


def _construct(node: yaml.ScalarNode) -> Any:
    if node.tag not in _TAGS:
        raise _Refused.at(node, f"unsupported YAML tag {_short_tag(node.tag)}")
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    except Exception as exc:  # PyYAML's constructors fail in many ways, none of them ours
        problem = getattr(exc, "problem", None) or "not a valid value"
        raise _Refused.at(
            node, f"cannot read the value as {_short_tag(node.tag)} ({problem})"
        ) from None


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


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

    def __init__(self, errors: list[ConfigError], files: Sequence[str] = ()) -> None:
        # Files in the order given (errors from `--config A --config B` list A's first), then
        # lines in file order.
        order = {name: index for index, name in enumerate(dict.fromkeys(files))}
        self.errors = sorted(
            errors,
            key=lambda e: (order.get(e.file, len(order)), e.file, e.line, [str(p) for p in e.loc]),
        )
        super().__init__("\n".join(str(e) for e in self.errors))


class ConfigUnreadable(ConfigInvalid):
    """The config file itself could not be read (missing, no permission, not a file)."""


@dataclass
class SourceMap:
    """Where each key or item of the parsed document was written (1-based lines), and the
    values its `${env:…}`/`${file:…}` references resolved to (never printed)."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    resolved: set[str] = field(default_factory=set)
    # After merging several files (`--config A --config B`): the file each location was
    # written in, where it is not `file` (the first one).
    files: dict[Loc, str] = field(default_factory=dict)
    # What the loader refused but read past (a reference that did not resolve, a duplicate key,
    # an unsupported tag), so that the model and the cross-checks still report everything else
    # in the same answer; and the locations whose value those problems left unusable, where a
    # later error would only repeat the first one.
    problems: list[ConfigError] = field(default_factory=list)
    broken: set[Loc] = field(default_factory=set)

    def is_broken(self, loc: Loc) -> bool:
        """Whether `loc` is at or under a value the loader could not build."""
        return any(tuple(loc[:end]) in self.broken for end in range(len(loc) + 1))

    def redacted(self, exc: ConfigInvalid, files: Sequence[str] = ()) -> ConfigInvalid:
        """The same errors with every resolved reference value replaced by `[redacted]`."""
        redactor = Redactor(self.resolved)
        if not redactor:
            return exc
        errors = [replace(e, message=redactor.text(e.message)) for e in exc.errors]
        return ConfigInvalid(errors, files)

    def _known(self, loc: Loc) -> Loc | None:
        # A missing key is reported at its parent mapping: walk up until a known location.
        for end in range(len(loc), -1, -1):
            if tuple(loc[:end]) in self.lines:
                return tuple(loc[:end])
        return None

    def line_of(self, loc: Loc) -> int:
        known = self._known(loc)
        return 1 if known is None else self.lines[known]

    def file_of(self, loc: Loc) -> str:
        known = self._known(loc)
        return self.file if known is None else self.files.get(known, self.file)

    def error(self, loc: Loc, message: str) -> ConfigError:
        return ConfigError(self.file_of(loc), self.line_of(loc), tuple(loc), message)


def merge_sources(
    base: tuple[Any, SourceMap], over: tuple[Any, SourceMap]
) -> tuple[Any, SourceMap]:
    """`over` laid on `base`, as `--config BASE --config OVER` reads them: mappings merge key by
    key, recursively; a list or a scalar in `over` replaces the value in `base` whole (merging
    lists item by item would make `peers` or `sites` impossible to shorten). Each location keeps
    the file and line it was written at, so errors point into the right file."""
    replaced: set[Loc] = set()  # where over's value won, subtree and all

    def walk(old: Any, new: Any, loc: Loc) -> Any:
        if isinstance(old, dict) and isinstance(new, dict):
            out = dict(old)
            for key, value in new.items():
                child = (*loc, key)
                if key in old:
                    out[key] = walk(old[key], value, child)
                else:
                    out[key] = value
                    replaced.add(child)
            return out
        replaced.add(loc)
        return new

    data = walk(base[0], over[0], ())
    old_map, new_map = base[1], over[1]

    def under_replaced(loc: Loc) -> bool:
        return any(loc[:end] in replaced for end in range(len(loc) + 1))

    merged = SourceMap(
        old_map.file,
        resolved=old_map.resolved | new_map.resolved,
        problems=old_map.problems + new_map.problems,
        broken=old_map.broken | new_map.broken,
    )
    for loc, line in old_map.lines.items():
        if not under_replaced(loc):
            merged.lines[loc] = line
            if loc in old_map.files:
                merged.files[loc] = old_map.files[loc]
    for loc, line in new_map.lines.items():
        if under_replaced(loc) or loc not in merged.lines:
            merged.lines[loc] = line
            merged.files[loc] = new_map.file_of(loc)
    return data, merged


def load_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Parse a YAML file into plain data, resolving secret references, with a SourceMap.

    Raises ConfigUnreadable for a file that cannot be read, ConfigInvalid for one that cannot be
    parsed (oversized, malformed YAML, nested or expanded beyond the bounds). What can be read
    past (duplicate keys, unsupported tags, unresolvable references: all of them, each with
    its line) is listed in `smap.problems`, and the caller goes on checking the rest.
    """
    name = str(path)
    smap = SourceMap(name)

    def refuse(message: str, line: int = 1) -> ConfigInvalid:
        return ConfigInvalid([ConfigError(name, line, (), message)])

    try:
        text = _read_bounded(Path(path), MAX_CONFIG_BYTES, what="the config")
        _check_shape(text)
        node = yaml.compose(text, Loader=_Loader)
    except _Unreadable as exc:
        raise ConfigUnreadable([ConfigError(name, 1, (), str(exc))]) from None
    except _Refused as exc:
        raise refuse(exc.message, exc.line) from None
    except yaml.MarkedYAMLError as exc:
        line, message = plain_yaml_error(exc, text)
        raise refuse(message, line) from None
    except yaml.YAMLError as exc:
        raise refuse(f"malformed YAML: {str(exc).splitlines()[0][:200]}") from None
    except RecursionError:  # not expected after _check_shape; never a traceback
        raise refuse(f"malformed YAML: nested deeper than {MAX_DEPTH} levels") from None
    if node is None:
        return {}, smap
    errors: list[ConfigError] = []
    try:
        data = _convert(node, (), smap, errors, [0])
    except _Refused as exc:
        raise refuse(exc.message, exc.line) from None
    smap.problems = errors
    return data, smap


def plain_yaml_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, str]:
    """A YAML syntax error in the words of someone writing a config, not of the parser
    (`expected <block end>, but found '?'`), with the line to look at. The parser's own
    words stay, after the explanation, for what is not recognised here. Both parsers'
    wordings are known: libyaml's (CSafeLoader) and PyYAML's own."""
    where = exc.problem_mark or exc.context_mark
    line = where.line + 1 if where else 1
    opened = exc.context_mark.line + 1 if exc.context_mark else line
    problem, context = exc.problem or "", exc.context or ""
    character = ""
    if exc.problem_mark is not None:
        rows = text.splitlines()
        row = rows[exc.problem_mark.line] if exc.problem_mark.line < len(rows) else ""
        column = exc.problem_mark.column
        character = row[column] if column < len(row) else ""
    plain: str | None = None
    if "mapping values are not allowed" in problem:
        plain = (
            "a ':' where no key can start: quote a value that holds ': ', indent a key "
            "exactly like the keys above it, or give the line above its ':'"
        )
    elif "cannot start any token" in problem:
        plain = (
            "a tab character: YAML indents with spaces only"
            if character == "\t" or "'\\t'" in problem
            else f"a value cannot start with {character or 'this character'!r}: quote the value"
        )
    elif "tab" in problem:
        plain = "a tab character: YAML indents with spaces only"
    elif "block collection" in context or "'-' indicator" in problem:
        plain = (
            f"this line does not continue the list that starts at line {opened}: begin an "
            "item with '- ', or indent the line under the item it belongs to"
        )
    elif "did not find expected key" in problem or "expected <block end>" in problem:
        plain = (
            "'-' where a key was expected: a list must be the value of a key of its own"
            if character == "-"
            else f"this line is not indented like the keys of the mapping at line {opened}: "
            "line it up with them, or indent it under the key it belongs to"
        )
    elif "',' or '}'" in problem:
        plain = (
            f"the {{...}} mapping opened at line {opened} does not close where expected: a "
            "value in it holding ':', ',', '{', '}', '[' or ']' must be quoted "
            "(path: '/orders/{{order_id}}')"
        )
    elif "',' or ']'" in problem:
        plain = (
            f"the [...] list opened at line {opened} does not close where expected: a value "
            "in it holding ':', ',', '{', '}', '[' or ']' must be quoted"
        )
    elif "end of stream" in problem and "quoted" in context:
        plain = f"the quoted text opened at line {opened} is never closed"
    elif "unknown escape" in problem:
        plain = (
            "an unknown backslash escape in a double-quoted string: write the value in single "
            "quotes (a regex: '^ord-\\d+$'), or double the backslash"
        )
    elif "undefined alias" in problem:
        plain = "an alias (*name) with no anchor (&name) before it"
    elif "duplicate anchor" in context:
        plain = f"an anchor (&name) defined twice, first at line {opened}"
    elif "another document" in problem:
        plain = "a second YAML document (after ---): a config is one document"
    elif "directive" in context or "<document start>" in problem:
        plain = "a line starting with '%' is a YAML directive: quote a value that starts so"
    words = " ".join(part for part in (context, problem) if part) or "malformed YAML"
    return line, f"YAML syntax: {plain}" if plain else f"YAML syntax: {words}"


class _Unreadable(Exception):
    """The file could not be opened or read at all (as opposed to read and refused)."""


def _read_bounded(path: Path, limit: int, *, what: str) -> str:
    """The file's text, refusing anything but a regular UTF-8 file of at most `limit` bytes
    (a FIFO or /dev/zero would otherwise block or fill memory)."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise _Unreadable(f"cannot read {what}: not a regular file")
            data = f.read(limit + 1)
    except OSError as exc:
        raise _Unreadable(f"cannot read {what}: {(exc.strerror or str(exc)).lower()}") from None
    if len(data) > limit:
        raise _Refused(1, f"{what} is larger than the limit of {limit // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(1, f"{what} is not UTF-8 text") from None


def _check_shape(text: str) -> None:
    """Walk the parser's events (an iterative state machine, unlike the composer) and refuse
    nesting beyond MAX_DEPTH before anything recursive sees the document."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _convert(
    node: yaml.Node, loc: Loc, smap: SourceMap, errors: list[ConfigError], budget: list[int]
) -> Any:
    # Aliases make a small document expand into a huge one: count every value built,
    # re-visits of an anchored node included.
    budget[0] += 1
    if budget[0] > MAX_VALUES:
        raise _Refused.at(node, f"the document expands to more than {MAX_VALUES} values (aliases?)")
    smap.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        if node.tag != "tag:yaml.org,2002:map":
            errors.append(smap.error(loc, f"unsupported YAML tag {_short_tag(node.tag)}"))
            smap.broken.add(loc)
            return None
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                errors.append(smap.error(loc, "YAML merge keys (<<) are not supported"))
                smap.broken.add(loc)  # the mapping lacks what that key held
                continue
            if isinstance(key_node, yaml.MappingNode) and node.flow_style:
                # `path: {{order_id}}` is YAML for a mapping whose key is a mapping.
                errors.append(
                    smap.error(
                        loc,
                        "an unquoted {{template}} is read as YAML: quote it, e.g. "
                        "path: '/orders/{{order_id}}'",
                    )
                )
                smap.broken.add(loc)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                errors.append(smap.error(loc, "keys must be strings, not collections"))
                smap.broken.add(loc)  # the mapping lacks what that key held
                continue
            try:
                key = _construct(key_node)
            except _Refused as exc:
                errors.append(ConfigError(smap.file, exc.line, loc, exc.message))
                smap.broken.add(loc)
                continue
            if not isinstance(key, str | int) or isinstance(key, bool):
                errors.append(smap.error(loc, f"keys must be strings, not {type(key).__name__}"))
                smap.broken.add(loc)  # the mapping lacks what that key held
                continue
            child = (*loc, key)
            smap.lines[child] = key_node.start_mark.line + 1
            if key in out:
                errors.append(smap.error(child, "duplicate key"))
                continue
            out[key] = _convert(value_node, child, smap, errors, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            errors.append(smap.error(loc, f"unsupported YAML tag {_short_tag(node.tag)}"))
            smap.broken.add(loc)
            return None
        items = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            smap.lines[child] = item.start_mark.line + 1
            items.append(_convert(item, child, smap, errors, budget))
        return items
    if not isinstance(node, yaml.ScalarNode):
        raise _Refused.at(node, "not a YAML scalar, mapping or sequence")
    try:
        value = _construct(node)
    except _Refused as exc:
        errors.append(ConfigError(smap.file, exc.line, loc, exc.message))
        smap.broken.add(loc)
        return None
    if isinstance(value, str) and "${" in value:
        return _resolve_references(value, loc, smap, errors)
    return value


def _resolve_references(value: str, loc: Loc, smap: SourceMap, errors: list[ConfigError]) -> str:
    """Replace `${env:NAME}` and `${file:/path}`. Messages name the reference, never its value;
    every value resolved is remembered in `smap.resolved` so that no error can print it."""

    def substitute(match: re.Match[str]) -> str:
        source, ref = match.group(1), match.group(2).strip()
        if source == "env":
            resolved = os.environ.get(ref)
            if resolved is None:
                errors.append(smap.error(loc, f"environment variable {ref} is not set"))
                smap.broken.add(loc)
                return ""
            smap.resolved.add(resolved)
            return resolved

        try:
            text = _read_bounded(Path(ref), MAX_SECRET_FILE_BYTES, what=f"secret file {ref}")
        except (_Unreadable, _Refused) as exc:
            errors.append(smap.error(loc, str(exc)))
            smap.broken.add(loc)
            return ""
        text = text.rstrip("\r\n")
        smap.resolved.add(text)
        return text

    return _REFERENCE.sub(substitute, value)
