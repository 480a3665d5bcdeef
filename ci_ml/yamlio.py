"""Reading the YAML files a project hands to ci-ml (config, waivers, advisory records) strictly.

The author of the change under review can edit these files, so the loader refuses
what YAML would otherwise accept silently or slowly:
- a duplicate key (the second ``policy:`` would silently replace the first): an
  error naming both lines;
- anchors and aliases that expand past a bound (the "billion laughs" bomb: each
  alias is cheap to write and doubles what validation, hashing and copying walk);
- nesting deeper than any config needs (PyYAML's composer recurses per level);
- ``.nan`` and ``.inf`` anywhere (every number must be finite; see ``check_finite``);
- a path that is not a regular file (``/dev/zero``, a FIFO, a directory) or is
  larger than a config can sensibly be, refused before it is read.
"""

from __future__ import annotations

import math
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ci_ml.errors import ConfigError, UsageError

MAX_TEXT_BYTES = 4 * 1024 * 1024     # far above any real config or waivers file
MAX_DEPTH = 64                       # nesting levels of mappings and sequences
MAX_ALIASES = 1000                   # alias uses in one document
MAX_EXPANDED_NODES = 200_000         # values in the document once every alias is expanded


class YamlLimitError(yaml.YAMLError):
    """A document that breaks one of the loader's bounds (depth, aliases, duplicates)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _line(node_or_mark: Any) -> int | None:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return mark.line + 1 if mark is not None and hasattr(mark, "line") else None


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with bounded depth and aliases, and duplicate keys as errors."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise YamlLimitError(f"more than {MAX_ALIASES} aliases", _line(event))
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels", _line(event))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            size, depth = _expanded_size(node)
            if size > MAX_EXPANDED_NODES:
                raise YamlLimitError(f"anchors and aliases expand to more than "
                                     f"{MAX_EXPANDED_NODES} values (an alias bomb?)", _line(node))
            if depth > MAX_DEPTH:
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels once aliases are "
                                     "expanded", _line(node))
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int | None] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue   # '<<' merge keys: own keys override merged ones by design
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key, -1)
            except TypeError:
                continue   # an unhashable key; SafeConstructor reports it
            if first != -1:
                raise YamlLimitError(f"duplicate key {key!r} (first on line {first}, again on "
                                     f"line {_line(key_node)})", _line(key_node))
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Node) -> tuple[int, int]:
    """(values, depth) of the document with every alias expanded, computed once per distinct
    node (an iterative post-order walk), so measuring a bomb costs nothing like expanding it.
    A node that contains itself through an alias is refused: nothing downstream terminates."""
    cap = MAX_EXPANDED_NODES + 1
    done: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            kids = _children(node)
            size = min(cap, 1 + sum(done[id(k)][0] for k in kids))
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            done[key] = (size, min(depth, cap))
            on_path.discard(key)
            continue
        if key in done:
            continue
        if key in on_path:
            raise YamlLimitError("an alias refers to a node that contains it (a recursive "
                                 "alias)", _line(node))
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in done)
    return done[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    assert isinstance(node, ScalarNode)
    return []


def parse_yaml(text: str, source: str, error: type[UsageError] = ConfigError) -> Any:
    """One YAML document, strictly; ``error`` (naming ``source`` and the line) otherwise."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlLimitError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise error(f"{source}: {where}{exc.message}") from exc
    except RecursionError as exc:   # belt and braces: the depth bound should come first
        raise error(f"{source}: nested too deeply") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{source}: {where}YAML syntax error: {problem}") from exc


def special_file_kind(mode: int) -> str | None:
    """What a path is when it is not a regular file or a directory (reading a character
    device like /dev/zero never ends; opening a FIFO blocks), else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a character device" if stat.S_ISCHR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode)
            else "not a regular file")


def read_text_file(path: Path, what: str, error: type[UsageError] = ConfigError,
                   max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text file; anything else (a device, a FIFO, a directory, a huge file,
    binary data) is one ``error`` naming the path, raised before reading a byte of it."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} not found") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: is a directory, expected a {what}")
    kind = special_file_kind(info.st_mode)
    if kind is not None:
        raise error(f"{path}: is {kind}, expected a {what} (a regular file)")
    if info.st_size > max_bytes:
        raise error(f"{path}: {info.st_size} bytes, larger than a {what} may be "
                    f"({max_bytes} bytes)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise error(f"{path}: larger than a {what} may be ({max_bytes} bytes)")
    if b"\x00" in data:
        raise error(f"{path}: not a text file (binary data), expected a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}), expected a {what}") from exc


def key_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def non_finite(doc: Any, prefix: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], float] | None:
    """The first NaN or infinity in a document, with its key path; None if all are finite."""
    stack: list[tuple[tuple[Any, ...], Any]] = [(prefix, doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
        if isinstance(value, Mapping):
            stack.extend((path + (k,), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list | tuple):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(value))))
    return None


def check_finite(doc: Any, source: str, error: type[UsageError] = ConfigError) -> None:
    found = non_finite(doc)
    if found is not None:
        path, value = found
        raise error(f"{source}: {key_path(path)}: {value} is not a finite number")
