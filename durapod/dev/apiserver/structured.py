"""Objects seen through their schema, as structured-merge-diff (SMD) sees them.

Server-side apply tracks ownership per field, so it needs to know what a "field" is: a map
key, or a list item named by its keys (``x-kubernetes-list-type: map``), by its value
(``set``), or nothing finer than the whole list (``atomic``, the default). This module
holds the walks SMD does over an object with its OpenAPI schema (``typed/tofieldset.go``,
``compare.go``, ``merge.go``, ``remove.go`` in kubernetes-sigs/structured-merge-diff):
the set of field paths an object sets, what changed between two objects, an applied
configuration merged into a live object, and an object with some fields removed.

A path is a tuple of path elements spelled as in ``fieldsV1``: ``f:name`` (a field),
``k:{"name":"app"}`` (a list item by its keys), ``v:"x"`` (a set item), ``i:0`` (an index).
Sets of paths are plain Python sets, whose union, intersection and difference are SMD's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str, ...]
#: Upstream's ``+default="TCP"`` on the ``protocol`` key of container and service ports,
#: which the packaged definitions leave out; without it an applied port would not match
#: its defaulted live twin.
_KEY_DEFAULTS = {"protocol": "TCP"}
Schema = dict[str, Any] | None
Resolve = Callable[[dict[str, Any]], dict[str, Any]]


class _Missing:
    """Absent, as opposed to present with the value null."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class StructureError(Exception):
    """An object that does not fit its schema's list semantics (SMD's ValidationError)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{display(path)}: {message}" if path else message)


@dataclass
class Comparison:
    """What changed from one object to another, as paths (SMD's ``typed.Comparison``)."""

    added: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)

    def kept(self, keep: Callable[[Path], bool]) -> Comparison:
        return Comparison(
            {p for p in self.added if keep(p)},
            {p for p in self.modified if keep(p)},
            {p for p in self.removed if keep(p)},
        )


class Types:
    """An object's OpenAPI v3 schema read for its merge semantics.

    ``root`` is the kind's schema (a CRD's ``openAPIV3Schema`` or a built-in definition),
    ``resolve`` follows ``$ref``s, and ``metadata`` is ObjectMeta's schema, which the
    API server uses for every kind's ``metadata`` (a CRD schema says only ``object``).
    No schema (None) is SMD's "deduced" type: maps are granular, lists atomic.
    """

    def __init__(self, root: Schema, resolve: Resolve, metadata: Schema = None) -> None:
        self._resolve = resolve
        node = self.node(root)
        if node is not None and metadata is not None:
            node = {**node, "properties": {**(node.get("properties") or {}), "metadata": metadata}}
        self.root: Schema = node

    # -- reading the schema ------------------------------------------------------------

    def node(self, schema: Schema) -> Schema:
        if schema is None:
            return None
        all_of = schema.get("allOf")
        if "$ref" not in schema and isinstance(all_of, list) and len(all_of) == 1:
            schema = all_of[0]
        return self._resolve(schema)

    def _extension(self, schema: Schema, name: str) -> Any:
        # An extension beside a $ref overrides the referenced definition's, as in SMD.
        if schema is None:
            return None
        if name in schema:
            return schema[name]
        node = self.node(schema)
        return node.get(name) if node else None

    def child(self, schema: Schema, name: str) -> Schema:
        node = self.node(schema)
        if node is None:
            return None
        props = node.get("properties") or {}
        if name in props:
            sub: Schema = props[name]
            return sub
        extra = node.get("additionalProperties")
        return extra if isinstance(extra, dict) else None

    def declared(self, schema: Schema, name: str) -> bool:
        node = self.node(schema)
        return node is not None and name in (node.get("properties") or {})

    def items(self, schema: Schema) -> Schema:
        node = self.node(schema)
        items = node.get("items") if node else None
        return items if isinstance(items, dict) else None

    def map_atomic(self, schema: Schema) -> bool:
        return bool(self._extension(schema, "x-kubernetes-map-type") == "atomic")

    def list_type(self, schema: Schema) -> tuple[str, tuple[str, ...]]:
        """``atomic``, ``set`` or ``map`` with its keys (kube-openapi's schemaconv rules)."""
        kind = self._extension(schema, "x-kubernetes-list-type")
        if kind in ("set", "atomic"):
            return kind, ()
        if kind == "map":
            return "map", tuple(self._extension(schema, "x-kubernetes-list-map-keys") or ())
        strategy = self._extension(schema, "x-kubernetes-patch-strategy")
        if strategy in ("merge", "merge,retainKeys"):
            key = self._extension(schema, "x-kubernetes-patch-merge-key")
            return ("map", (key,)) if key else ("set", ())
        return "atomic", ()

    def at(self, path: Path) -> Schema:
        """The schema of the field at ``path``."""
        schema = self.root
        for element in path:
            if element.startswith("f:"):
                schema = self.child(schema, element[2:])
            else:
                schema = self.items(schema)
        return schema

    # -- list items --------------------------------------------------------------------

    def element(self, item: Any, schema: Schema, kind: str, keys: tuple[str, ...]) -> str:
        """The path element naming ``item`` of a ``set`` or ``map`` list."""
        if kind == "map":
            if item is None:
                raise ValueError("associative list with keys may not have a null element")
            if not isinstance(item, dict):
                raise ValueError("associative list with keys may not have non-map elements")
            named = {}
            for key in keys:
                if key in item:
                    named[key] = item[key]
                elif (default := self._default(schema, key)) is not None:
                    named[key] = default
            if not named:
                raise ValueError(
                    "associative list with keys has an element that omits all key fields "
                    f"{_go_strings(keys)} (and doesn't have default values for any key fields)"
                )
            return "k:" + go_json(dict(sorted(named.items())))
        if isinstance(item, dict):
            raise ValueError("associative list without keys has an element that's a map type")
        if isinstance(item, list):
            raise ValueError("not supported: associative list with lists as elements")
        if item is None:
            raise ValueError("associative list without keys has an element that's an explicit null")
        return "v:" + go_json(item)

    def _default(self, schema: Schema, key: str) -> Any:
        sub = self.child(self.items(schema), key)
        default = sub.get("default") if sub else None
        return _KEY_DEFAULTS.get(key) if default is None else default

    def _elements(
        self, items: list[Any], schema: Schema, path: Path, strict: bool
    ) -> list[str | None]:
        """Each item's path element; None for an item that cannot be named (lenient)."""
        kind, keys = self.list_type(schema)
        named: list[str | None] = []
        for index, item in enumerate(items):
            try:
                named.append(self.element(item, schema, kind, keys))
            except ValueError as exc:
                if strict:
                    raise StructureError(path, f"element {index}: {exc}") from None
                named.append(None)
        return named

    # -- walks -------------------------------------------------------------------------

    def field_set(self, obj: Any, strict: bool = False) -> set[Path]:
        """Every path ``obj`` sets (SMD's ``ToFieldSet``); ``strict`` refuses duplicates."""
        out: set[Path] = set()
        self._fields(obj, self.root, (), out, strict)
        return out

    def _fields(self, value: Any, schema: Schema, path: Path, out: set[Path], strict: bool) -> None:
        if isinstance(value, dict):
            if self.map_atomic(schema):
                _insert(out, path)
                return
            for key, child in value.items():
                sub = (*path, _field(key))
                self._fields(child, self.child(schema, key), sub, out, strict)
                # A granular map's own path is owned only when it is empty or not a
                # declared field (a label key is owned; ``spec`` is owned through its fields).
                if child is None or child == {} or not self.declared(schema, key):
                    out.add(sub)
        elif isinstance(value, list):
            if self.list_type(schema)[0] == "atomic":
                _insert(out, path)
                return
            elements = self._elements(value, schema, path, strict)
            doubled = _doubled(elements)
            if doubled and strict:
                first = next(e for e in elements if e in doubled)
                raise StructureError(path, f"duplicate entries for key {display((first,))}")
            items = self.items(schema)
            for element, item in zip(elements, value, strict=True):
                if element is None:
                    continue
                sub = (*path, element)
                out.add(sub)
                if element not in doubled:
                    self._fields(item, items, sub, out, strict)
        else:
            _insert(out, path)

    def compare(self, old: Any, new: Any) -> Comparison:
        """What changed from ``old`` to ``new`` (SMD's ``Compare``)."""
        result = Comparison()
        self._compare(old, new, self.root, (), result)
        result.added.discard(())
        result.modified.discard(())
        result.removed.discard(())
        return result

    def _compare(self, old: Any, new: Any, schema: Schema, path: Path, out: Comparison) -> None:
        before, after = _shape(old), _shape(new)
        if before and after and before is not after:
            _leaf(old, new, path, out)
            return
        shape = after or before
        if shape is dict:
            lhs = old if isinstance(old, dict) else {}
            rhs = new if isinstance(new, dict) else {}
            if self.map_atomic(schema) or (not lhs and not rhs):
                _leaf(old, new, path, out)
                return
            for key in {**lhs, **rhs}:
                self._compare(
                    lhs.get(key, MISSING),
                    rhs.get(key, MISSING),
                    self.child(schema, key),
                    (*path, _field(key)),
                    out,
                )
        elif shape is list:
            lhs_list = old if isinstance(old, list) else []
            rhs_list = new if isinstance(new, list) else []
            atomic = self.list_type(schema)[0] == "atomic"
            if atomic or (not lhs_list and not rhs_list):
                _leaf(old, new, path, out)
                return
            self._compare_items(lhs_list, rhs_list, schema, path, out)
        else:
            _leaf(old, new, path, out)
            return
        if old is MISSING:
            out.added.add(path)
        elif new is MISSING:
            out.removed.add(path)

    def _compare_items(
        self, old: list[Any], new: list[Any], schema: Schema, path: Path, out: Comparison
    ) -> None:
        before = _grouped(old, self._elements(old, schema, path, False))
        after = _grouped(new, self._elements(new, schema, path, False))
        items = self.items(schema)
        for element in {**before, **after}:
            lhs, rhs = before.get(element, []), after.get(element, [])
            sub = (*path, element)
            if len(lhs) <= 1 and len(rhs) <= 1:
                self._compare(
                    lhs[0] if lhs else MISSING, rhs[0] if rhs else MISSING, items, sub, out
                )
            elif len(lhs) >= 2 and len(rhs) >= 2:
                # Duplicated items are compared as one atomic value.
                if lhs != rhs:
                    out.modified.add(sub)
            elif len(lhs) >= 2:
                if rhs:
                    self._compare(MISSING, rhs[0], items, sub, out)
                out.removed.add(sub)
            else:
                if lhs:
                    self._compare(lhs[0], MISSING, items, sub, out)
                out.added.add(sub)

    def merge(self, live: Any, config: Any) -> Any:
        """``config`` merged into ``live``; the configuration wins (SMD's ``Merge``)."""
        return self._merge(live, config, self.root, ())

    def _merge(self, lhs: Any, rhs: Any, schema: Schema, path: Path) -> Any:
        if rhs is MISSING:
            return lhs
        if lhs is MISSING or lhs is None or rhs is None:
            return rhs
        if isinstance(lhs, dict) and isinstance(rhs, dict):
            if self.map_atomic(schema) or (not lhs and not rhs):
                return rhs
            out = dict(lhs)
            for key, value in rhs.items():
                out[key] = self._merge(
                    lhs.get(key, MISSING), value, self.child(schema, key), (*path, _field(key))
                )
            return out
        if isinstance(lhs, list) and isinstance(rhs, list):
            if self.list_type(schema)[0] == "atomic" or (not lhs and not rhs):
                return rhs
            return self._merge_items(lhs, rhs, schema, path)
        return rhs

    def _merge_items(self, lhs: list[Any], rhs: list[Any], schema: Schema, path: Path) -> list[Any]:
        """SMD's ordering: the live order, with applied items placed in the applied order."""
        rhs_named = [e or "" for e in self._elements(rhs, schema, path, True)]
        if doubled := _doubled(rhs_named):
            first = next(e for e in rhs_named if e in doubled)
            raise StructureError(path, f"duplicate entries for key {display((first,))}")
        lhs_named = [e or f"\0{i}" for i, e in enumerate(self._elements(lhs, schema, path, False))]
        observed_rhs = dict(zip(rhs_named, rhs, strict=True))
        observed_lhs: dict[str, Any] = {}
        for element, item in zip(lhs_named, lhs, strict=True):
            # A duplicated live item merges as null: the applied item replaces them all.
            observed_lhs[element] = None if element in observed_lhs else item
        shared = iter([e for e in rhs_named if e in observed_lhs])
        next_shared = next(shared, None)
        items = self.items(schema)
        merged: set[str] = set()
        out: list[Any] = []
        li = ri = 0
        while li < len(lhs_named) or ri < len(rhs_named):
            if li < len(lhs_named) and ri < len(rhs_named):
                element = lhs_named[li]
                if element == rhs_named[ri]:
                    merged.add(element)
                    sub = (*path, element)
                    out.append(
                        self._merge(observed_lhs[element], observed_rhs[element], items, sub)
                    )
                    li, ri = li + 1, ri + 1
                    next_shared = next(shared, None)
                    continue
                if element in observed_rhs and next_shared not in (None, element):
                    li += 1
                    continue
            if li < len(lhs_named):
                element = lhs_named[li]
                if element not in observed_rhs:
                    out.append(lhs[li])
                    li += 1
                    continue
                if element in merged:
                    li += 1
            if ri < len(rhs_named):
                element = rhs_named[ri]
                merged.add(element)
                sub = (*path, element)
                out.append(
                    self._merge(
                        observed_lhs.get(element, MISSING), observed_rhs[element], items, sub
                    )
                )
                ri += 1
                if next_shared == element:
                    next_shared = next(shared, None)
        return out

    def remove(self, obj: Any, paths: Iterable[Path]) -> Any:
        """``obj`` without the fields at ``paths`` and everything under them.

        A map or list emptied by the removal goes too (SMD leaves a null there, which
        decoding or CRD null-pruning drops before the object is stored).
        """
        result = self._remove(obj, trie(paths), self.root)
        return {} if result is MISSING else result

    def _remove(self, value: Any, node: dict[str, Any], schema: Schema) -> Any:
        if isinstance(value, dict):
            if not value or self.map_atomic(schema):
                return MISSING
            out = {}
            for key, child in value.items():
                sub = node.get(_field(key))
                if sub is None:
                    out[key] = child
                elif not _is_member(sub):
                    kept = self._remove(child, sub, self.child(schema, key))
                    if kept is not MISSING:
                        out[key] = kept
            return out or MISSING
        if isinstance(value, list):
            if not value or self.list_type(schema)[0] == "atomic":
                return MISSING
            items = self.items(schema)
            out_items = []
            for element, item in zip(self._elements(value, schema, (), False), value, strict=True):
                sub = node.get(element) if element is not None else None
                if sub is None:
                    out_items.append(item)
                elif not _is_member(sub):
                    kept = self._remove(item, sub, items)
                    if kept is not MISSING:
                        out_items.append(kept)
            return out_items or MISSING
        return value

    def with_named_fields(self, paths: Iterable[Path]) -> set[Path]:
        """``paths`` plus every declared field above them (SMD's
        ``EnsureNamedFieldsAreMembers``), so removing those removes whole structs."""
        out = set(paths)
        schemas: dict[Path, Schema] = {(): self.root}
        for path in list(out):
            for end in range(1, len(path)):
                prefix = path[:end]
                element = prefix[-1]
                if prefix in out or not element.startswith("f:"):
                    continue
                parent = prefix[:-1]
                if parent not in schemas:
                    schemas[parent] = self.at(parent)
                if self.declared(schemas[parent], element[2:]):
                    out.add(prefix)
        return out


# -- paths ---------------------------------------------------------------------------------


def _field(name: str) -> str:
    return sys.intern("f:" + name)


def _insert(out: set[Path], path: Path) -> None:
    if path:
        out.add(path)


def _leaf(old: Any, new: Any, path: Path, out: Comparison) -> None:
    if old is MISSING:
        out.added.add(path)
    elif new is MISSING:
        out.removed.add(path)
    elif old != new or isinstance(old, bool) != isinstance(new, bool):
        # Python's True == 1; Go's value.Equals tells them apart.
        out.modified.add(path)


def _shape(value: Any) -> type | None:
    if value is MISSING or value is None:
        return None
    if isinstance(value, dict):
        return dict
    if isinstance(value, list):
        return list
    return object


def _doubled(elements: Sequence[str | None]) -> set[str]:
    seen: set[str] = set()
    doubled: set[str] = set()
    for element in elements:
        if element is not None:
            (doubled if element in seen else seen).add(element)
    return doubled


def _grouped(items: list[Any], elements: list[str | None]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for element, item in zip(elements, items, strict=True):
        if element is not None:
            groups.setdefault(element, []).append(item)
    return groups


def go_json(value: Any) -> str:
    """Compact JSON with sorted keys and HTML characters escaped, as Go's encoder writes."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _go_strings(values: Iterable[str]) -> str:
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def _shown(value: Any) -> str:
    """A value as SMD's ``value.ToString`` prints it in paths."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "".join(f"{k}={_shown(v)}" for k, v in value.items())
    return str(value)


def display(path: Path) -> str:
    """A path as the API server prints it: ``.spec.containers[name="app"].image``."""
    parts = []
    for element in path:
        kind, text = element[:1], element[2:]
        if kind == "f":
            parts.append("." + text)
        elif kind == "k":
            keys = json.loads(text)
            parts.append("[" + ",".join(f"{k}={_shown(v)}" for k, v in keys.items()) + "]")
        elif kind == "v":
            parts.append(f"[={_shown(json.loads(text))}]")
        else:
            parts.append(f"[{text}]")
    return "".join(parts)


def _sort_key(element: str) -> tuple[int, Any]:
    rank = "fkvi".find(element[:1])
    return (rank, int(element[2:]) if rank == 3 else element[2:])


def ordered(paths: Iterable[Path]) -> Iterator[Path]:
    """Paths in SMD's iteration order: at each level its members first, then its children."""
    yield from _walk(trie(paths), ())


def _walk(node: dict[str, Any], prefix: Path) -> Iterator[Path]:
    elements = sorted((e for e in node if e != "."), key=_sort_key)
    for element in elements:
        if _is_member(node[element]):
            yield (*prefix, element)
    for element in elements:
        yield from _walk(node[element], (*prefix, element))


# -- fieldsV1 ------------------------------------------------------------------------------

#: The leaf of every encoded set: shared, so a big managedFields costs little; never mutated.
_LEAF: dict[str, Any] = {}


def trie(paths: Iterable[Path]) -> dict[str, Any]:
    """Paths as a tree whose nodes are members when empty or marked with ``"."``."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for element in path:
            node = node.setdefault(element, {})
        node["."] = _LEAF
    return root


def _is_member(node: dict[str, Any]) -> bool:
    return not node or "." in node


def encode(paths: Iterable[Path]) -> dict[str, Any]:
    """A set of paths as ``fieldsV1`` (SMD's ``Set.ToJSON``)."""
    return _compact(trie(paths))


def _compact(node: dict[str, Any]) -> dict[str, Any]:
    if len(node) == 1 and "." in node:
        return _LEAF
    out: dict[str, Any] = {}
    if "." in node:
        out["."] = _LEAF
    for element in sorted((e for e in node if e != "."), key=_sort_key):
        out[sys.intern(element)] = _compact(node[element])
    return out


def decode(fields: Any) -> set[Path]:
    """``fieldsV1`` as a set of paths; ValueError if it is not one."""
    out: set[Path] = set()
    _decode(fields, (), out)
    return out


def _decode(node: Any, prefix: Path, out: set[Path]) -> None:
    if not isinstance(node, dict):
        raise ValueError(f"fieldsV1 must be an object, not {node!r}")
    for element, child in node.items():
        if element == ".":
            if prefix:
                out.add(prefix)
            continue
        if len(element) < 2 or element[1] != ":" or element[0] not in "fkvi":
            raise ValueError(f"unknown path element {element!r}")
        if child == {}:
            out.add((*prefix, element))
        else:
            _decode(child, (*prefix, element), out)
