"""Structured inputs and outputs ("pytrees", as JAX calls them).

A tree is a leaf (a number, a numpy array, any adcore value) or a dict, list,
tuple, namedtuple or dataclass instance of trees.  ``flatten`` lists the leaves
in a fixed order (dicts in insertion order) and returns a ``TreeDef`` that
``unflatten`` uses to rebuild the same structure around new leaves, so drivers
hand gradients back in the structure the user passed in.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Tuple

__all__ = ["TreeDef", "flatten", "unflatten", "tree_map", "leaf_paths", "register_node"]

#: node types registered by other modules: type -> (children_of, rebuild)
_NODES: dict = {}


def register_node(cls, children_of, rebuild):
    """Make instances of ``cls`` tree nodes: ``children_of(x) -> (children, aux)``
    (aux: hashable static data), ``rebuild(aux, children) -> x``."""
    _NODES[cls] = (children_of, rebuild)


class TreeDef:
    """The shape of a tree without its leaves."""

    __slots__ = ("kind", "meta", "children")

    def __init__(self, kind: str, meta: Any = None, children: Tuple["TreeDef", ...] = ()):
        self.kind = kind          # "leaf", "dict", "list", "tuple", "namedtuple", "dataclass", "none"
        self.meta = meta          # dict keys, the namedtuple / dataclass type and field names
        self.children = children

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(child.num_leaves for child in self.children)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TreeDef) and self.kind == other.kind
                and self.meta == other.meta and self.children == other.children)

    def __hash__(self) -> int:
        return hash((self.kind, repr(self.meta), self.children))

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(map(repr, self.children))
        if self.kind == "dict":
            inner = ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children))
            return "{" + inner + "}"
        if self.kind == "list":
            return "[" + inner + "]"
        if self.kind == "tuple":
            return "(" + inner + ("," if len(self.children) == 1 else "") + ")"
        return f"{self.meta[0].__name__}({inner})"


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def flatten(tree: Any) -> Tuple[List[Any], TreeDef]:
    """The leaves of ``tree`` in order, and its structure."""
    leaves: List[Any] = []
    treedef = _walk(tree, leaves)
    return leaves, treedef


# The recursions are module functions with explicit state, not closures: a
# recursive closure refers to itself through its cell, a reference cycle that
# would keep the leaves (and a recorded tape behind them) alive until gc runs.
def _walk(node: Any, leaves: List[Any]) -> TreeDef:
    if node is None:
        return TreeDef("none")
    custom = _NODES.get(type(node))
    if custom is not None:
        children, aux = custom[0](node)
        return TreeDef("custom", (type(node), aux), tuple(_walk(c, leaves) for c in children))
    if isinstance(node, dict):
        keys = tuple(node.keys())
        return TreeDef("dict", keys, tuple(_walk(node[k], leaves) for k in keys))
    if _is_namedtuple(node):
        return TreeDef("namedtuple", (type(node), node._fields),
                       tuple(_walk(v, leaves) for v in node))
    if isinstance(node, tuple):
        return TreeDef("tuple", None, tuple(_walk(v, leaves) for v in node))
    if isinstance(node, list):
        return TreeDef("list", None, tuple(_walk(v, leaves) for v in node))
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        names = tuple(f.name for f in dataclasses.fields(node))
        return TreeDef("dataclass", (type(node), names),
                       tuple(_walk(getattr(node, n), leaves) for n in names))
    leaves.append(node)
    return TreeDef("leaf")


def unflatten(treedef: TreeDef, leaves: List[Any]) -> Any:
    """Rebuild the structure ``treedef`` around ``leaves`` (consumed in order)."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"unflatten: the structure {treedef!r} has {treedef.num_leaves} "
                         f"leaves but {len(leaves)} were given")
    return _build(treedef, iter(leaves))


def _build(td: TreeDef, it: Any) -> Any:
    if td.kind == "leaf":
        return next(it)
    if td.kind == "none":
        return None
    items = [_build(c, it) for c in td.children]
    if td.kind == "custom":
        return _NODES[td.meta[0]][1](td.meta[1], items)
    if td.kind == "dict":
        return dict(zip(td.meta, items))
    if td.kind == "list":
        return items
    if td.kind == "tuple":
        return tuple(items)
    if td.kind == "namedtuple":
        return td.meta[0](*items)
    cls, names = td.meta
    obj = cls.__new__(cls)
    for name, value in zip(names, items):
        object.__setattr__(obj, name, value)  # works for frozen dataclasses too
    return obj


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leaf-wise to one or more trees of the same structure."""
    leaves, treedef = flatten(tree)
    others = []
    for other in rest:
        other_leaves, other_def = flatten(other)
        if other_def != treedef:
            raise ValueError(f"tree_map: structures differ: {treedef!r} and {other_def!r}")
        others.append(other_leaves)
    return unflatten(treedef, [fn(*args) for args in zip(leaves, *others)])


def leaf_paths(tree: Any) -> List[Tuple[Any, ...]]:
    """The path (keys / indices / field names) to each leaf, in flatten order."""
    paths: List[Tuple[Any, ...]] = []
    _paths(tree, (), paths)
    return paths


def _paths(node: Any, path: Tuple[Any, ...], paths: List[Tuple[Any, ...]]) -> None:
    if node is None:
        return
    custom = _NODES.get(type(node))
    if custom is not None:
        for i, child in enumerate(custom[0](node)[0]):
            _paths(child, path + (i,), paths)
        return
    if isinstance(node, dict):
        for k in node:
            _paths(node[k], path + (k,), paths)
    elif _is_namedtuple(node):
        for name, v in zip(node._fields, node):
            _paths(v, path + (name,), paths)
    elif isinstance(node, (tuple, list)):
        for i, v in enumerate(node):
            _paths(v, path + (i,), paths)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _paths(getattr(node, f.name), path + (f.name,), paths)
    else:
        paths.append(path)
