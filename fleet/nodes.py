"""Host lists in the pdsh/ClusterShell syntax: ``wn[01-20]``, ``wn[01-05,08],gpu[1-2]``,
``wn[01-20]!wn[05-06]`` (ClusterShell's NodeSet), plus pdsh-style exclusions."""
from __future__ import annotations

import re
from typing import Iterable

NODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class NodesError(ValueError):
    """A host list that cannot be used; the message says why."""


def expand(expression: str, exclude: str | None = None) -> list[str]:
    """The node names of ``expression`` minus those of ``exclude``, in NodeSet order."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        nodes = NodeSet(expression)
        if exclude:
            nodes.difference_update(NodeSet(exclude))
    except NodeSetException as exc:
        raise NodesError(f"bad host list {expression!r}{f' / {exclude!r}' if exclude else ''}: {exc}") from None
    names = list(nodes)
    if not names:
        raise NodesError(f"the host list {expression!r} names no hosts")
    for name in names:
        if not NODE_NAME.match(name):
            raise NodesError(f"bad host name {name!r} in {expression!r}: use letters, digits, '.', '_' and '-'")
    return names


def fold(names: Iterable[str]) -> str:
    """The shortest host-list expression for ``names`` (``wn[01-03,07]``)."""
    from ClusterShell.NodeSet import NodeSet

    names = list(names)
    return str(NodeSet.fromlist(names)) if names else ""


def check_name(name: str, what: str = "name") -> str:
    """``name`` if usable as a node or fleet name, else NodesError."""
    if not NODE_NAME.match(name):
        raise NodesError(f"bad {what} {name!r}: use letters, digits, '.', '_' and '-'")
    return name
