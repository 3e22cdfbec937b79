"""DAG templates: vertices are jobs, edges are data files.

A template is read from p3s YAML (``load_yaml``) or from the original p3s GraphML
(``load_graphml``), validated, and kept as a ``Template``. ``Template.to_dict()`` is the JSON form
the server stores; ``to_yaml()`` and ``to_graphml()`` export it again. This module is pure: it
knows nothing of the database or the server.

YAML format
-----------

.. code-block:: yaml

    name: 1filter                        # required; letters, digits and _.:@+- (at most 128)
    description: one filter between an input and an output
    jobs:                                # required, non-empty: vertex name -> its job, in order
      NOOP1: {noop: true}                # a NOOP vertex: an external input or a sink, never run
      filter:
        jobtype: filter                  # default "default"
        payload: grep -c TEST $INPTXT > $OUTTXT
        env: {P3S_EXECMODE: SHELL}       # NAME: value (strings, or numbers kept as written)
        priority: 0                      # integer, default 0
        timelimit: 600                   # seconds, a positive integer; default: the server's
        eta: 300                         # seconds from data arrival; default: the job type's ETA
      NOOP2: {noop: true}
    data:                                # edges: files from source to target, in order
      - {id: in, source: NOOP1, target: filter, name: input.txt, dirpath: /data/in,
         datatype: TXT, datatag: INPTXT, comment: the raw input}
      - {source: filter, target: NOOP2, datatype: TXT, datatag: OUTTXT}

Top level: ``name``, ``description``, ``jobs``, ``data``. A job: ``jobtype``, ``payload``,
``env``, ``priority``, ``timelimit``, ``noop``, ``eta``. A data edge: ``id``, ``source``, ``target``,
``name`` (a file name or a pattern), ``dirpath``, ``datatype``, ``datatag``, ``comment``. Any
other key is an error, and so is a key given twice.

- Vertex names and edge ids are simple names: ``^[A-Za-z0-9][A-Za-z0-9_.-]*$``.
- A job needs a ``payload``; a NOOP (``noop: true``, or ``jobtype: noop``) must not have one.
- An edge ``id`` may be left out: the edge at position *n* (from 1) is then ``e<n>``. Ids must be
  unique.
- Every edge needs a ``source`` and a ``target`` among the jobs: data always flows into a job or
  a NOOP vertex (add a NOOP sink for final outputs).
- ``datatag`` is the name of the environment variable that carries the file's path to both jobs
  of the edge (``^[A-Za-z_][A-Za-z0-9_]*$``). Two edges touching the same (non-NOOP) job may not
  share a data tag, and a job's ``env`` may not set a variable that one of its data tags sets.
- ``datatype`` must be a registered data type when the server checks the template.
- Several edges may join the same two vertices; the graph must have no cycle.

Errors name the job or edge and, for YAML, the place: ``file:line:col: message``.

GraphML
-------

The original's format: node attributes ``payload``, ``env`` (a JSON string), ``jobtype``
(``noop`` for a NOOP), ``timelimit`` (int; 0 means none) and ``priority`` (int); edge attributes
``name``, ``dirpath``, ``datatype``, ``datatag`` and ``comment``; the optional edge ``id``
attribute is the edge id. Graph attributes ``name`` and ``description`` (or the graph's ``id``)
name the template. Display attributes that editors such as Gephi add (``label``, ``x``, ``y``,
``size``, colours …) are ignored; any other attribute is an error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import yaml

if TYPE_CHECKING:
    import networkx as nx

NOOP = "noop"
DEFAULT_JOBTYPE = "default"
VERTEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TEMPLATE_KEYS = ("name", "description", "jobs", "data")
JOB_KEYS = ("jobtype", "payload", "env", "priority", "timelimit", "noop", "eta")
EDGE_KEYS = ("id", "source", "target", "name", "dirpath", "datatype", "datatag", "comment")
EDGE_TEXT_FIELDS = EDGE_KEYS[1:]
DISPLAY_ATTRIBUTES = frozenset({"label", "x", "y", "z", "size", "r", "g", "b", "color", "colour", "weight",
                                "shape", "width", "height", "edge label"})

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
GRAPHML_NODE_KEYS = (("payload", "string", "d101"), ("env", "string", "d102"), ("jobtype", "string", "d103"),
                     ("timelimit", "int", "d104"), ("priority", "int", "d105"))
GRAPHML_EDGE_KEYS = (("name", "string", "d1"), ("dirpath", "string", "d2"), ("datatype", "string", "d3"),
                     ("datatag", "string", "d4"), ("comment", "string", "d5"))
GRAPHML_GRAPH_KEYS = (("name", "string", "d201"), ("description", "string", "d202"))


class DagError(ValueError):
    """An invalid template; ``errors`` holds one message per problem, ``str()`` joins them by lines."""

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


@dataclass
class Vertex:
    """A job of the DAG (a NOOP vertex is never run and finishes as soon as its parents have)."""

    name: str
    jobtype: str = DEFAULT_JOBTYPE
    payload: str = ""
    env: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    timelimit: int | None = None
    noop: bool = False
    eta: int | None = None               # seconds from data arrival (default: the job type's ETA)

    def __post_init__(self) -> None:
        if self.noop is True or self.jobtype == NOOP:
            self.noop, self.jobtype = True, NOOP

    def to_dict(self) -> dict[str, Any]:
        """The vertex as a JSON-able dict."""
        out = dataclasses.asdict(self)
        out["env"] = dict(self.env)
        return out


@dataclass
class Edge:
    """A data file that ``source`` produces and ``target`` consumes."""

    id: str
    source: str
    target: str
    name: str = ""
    dirpath: str = ""
    datatype: str = ""
    datatag: str = ""
    comment: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The edge as a JSON-able dict."""
        return dataclasses.asdict(self)

    def label(self) -> str:
        """How error messages name the edge: its id and its ends."""
        return f"data {self.id!r} ({self.source or '?'} -> {self.target or '?'})"


@dataclass
class Template:
    """A named DAG: vertices (in file order) and data edges (in file order)."""

    name: str
    description: str = ""
    vertices: dict[str, Vertex] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    # --- structure ----------------------------------------------------------------------------
    def graph(self) -> nx.MultiDiGraph:
        """The DAG as a networkx multigraph: vertex attributes on nodes, edge ids as edge keys."""
        import networkx as nx       # here, not at the top: it costs every server start 0.2 s otherwise

        graph = nx.MultiDiGraph(name=self.name, description=self.description)
        for vertex in self.vertices.values():
            attrs = vertex.to_dict()
            del attrs["name"]
            graph.add_node(vertex.name, **attrs)
        for edge in self.edges:
            graph.add_edge(edge.source, edge.target, key=edge.id, **edge.to_dict())
        return graph

    def roots(self) -> list[str]:
        """Vertices without an incoming edge, in file order."""
        targets = {edge.target for edge in self.edges}
        return [name for name in self.vertices if name not in targets]

    def leaves(self) -> list[str]:
        """Vertices without an outgoing edge, in file order."""
        sources = {edge.source for edge in self.edges}
        return [name for name in self.vertices if name not in sources]

    def parents(self, vertex: str) -> list[str]:
        """Distinct vertices with an edge into ``vertex``, in file order."""
        return self._ends(vertex, lambda e: e.target, lambda e: e.source)

    def children(self, vertex: str) -> list[str]:
        """Distinct vertices with an edge from ``vertex``, in file order."""
        return self._ends(vertex, lambda e: e.source, lambda e: e.target)

    def edges_of(self, vertex: str) -> list[Edge]:
        """Edges into or out of ``vertex``, in file order."""
        return [edge for edge in self.edges if vertex in (edge.source, edge.target)]

    def topological_order(self) -> list[str]:
        """Vertex names, parents before children, ties in file order; DagError on a cycle."""
        import networkx as nx

        position = {name: i for i, name in enumerate(self.vertices)}
        try:
            order = nx.lexicographical_topological_sort(self.graph(), key=lambda v: position.get(v, len(position)))
            return list(order)
        except nx.NetworkXUnfeasible:
            raise DagError(f"template {self.name!r}: {_cycle_message(self)}") from None

    def _ends(self, vertex: str, near: Callable[[Edge], str], far: Callable[[Edge], str]) -> list[str]:
        if vertex not in self.vertices:
            raise KeyError(vertex)
        found = {far(edge) for edge in self.edges if near(edge) == vertex}
        return [name for name in self.vertices if name in found]

    # --- conversions --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form the server stores (vertices as a list: names may contain dots)."""
        return {"name": self.name, "description": self.description,
                "vertices": [vertex.to_dict() for vertex in self.vertices.values()],
                "edges": [edge.to_dict() for edge in self.edges]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Template:
        """The template ``to_dict`` gave (not validated again)."""
        try:
            vertices = [Vertex(**{**v, "env": dict(v.get("env") or {})}) for v in data["vertices"]]
            edges = [Edge(**e) for e in data["edges"]]
            return cls(data["name"], data.get("description", ""), {v.name: v for v in vertices}, edges)
        except (KeyError, TypeError) as exc:
            raise DagError(f"malformed stored template: {exc}") from None

    def to_yaml(self) -> str:
        """The template in p3s YAML (defaults left out); ``load_yaml`` reads it back unchanged."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["jobs"] = {name: _vertex_yaml(vertex) for name, vertex in self.vertices.items()}
        if self.edges:
            doc["data"] = [_edge_yaml(edge) for edge in self.edges]
        return yaml.dump(doc, Dumper=_YamlDumper, sort_keys=False, default_flow_style=None, allow_unicode=True,
                         width=float("inf"))

    def to_graphml(self) -> str:
        """The template in the original's GraphML; ``load_graphml`` reads it back unchanged."""
        lines = ["<?xml version='1.0' encoding='utf-8'?>",
                 f'<graphml xmlns="{GRAPHML_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                 f'xsi:schemaLocation="{GRAPHML_NS} {GRAPHML_NS}/1.0/graphml.xsd">']
        for domain, keys in (("graph", GRAPHML_GRAPH_KEYS), ("node", GRAPHML_NODE_KEYS), ("edge", GRAPHML_EDGE_KEYS)):
            lines += [f'  <key attr.name="{name}" attr.type="{kind}" for="{domain}" id="{key}" />'
                      for name, kind, key in keys]
        lines.append('  <graph edgedefault="directed">')
        lines += _graphml_data("    ", GRAPHML_GRAPH_KEYS, {"name": self.name, "description": self.description})
        for vertex in self.vertices.values():
            lines.append(f"    <node id={quoteattr(vertex.name)}>")
            lines += _graphml_data("      ", GRAPHML_NODE_KEYS, _vertex_graphml(vertex))
            lines.append("    </node>")
        for edge in self.edges:
            lines.append(f"    <edge id={quoteattr(edge.id)} source={quoteattr(edge.source)} "
                         f"target={quoteattr(edge.target)}>")
            lines += _graphml_data("      ", GRAPHML_EDGE_KEYS, edge.to_dict())
            lines.append("    </edge>")
        lines += ["  </graph>", "</graphml>"]
        return "\n".join(lines) + "\n"


# --- validation -------------------------------------------------------------------------------
@dataclass
class Problem:
    """One validation failure: where it is (kind, key, field) and what is wrong."""

    kind: str            # "template", "job" or "data"
    key: Any             # the vertex name, or the edge's position in ``Template.edges``
    field: str | None
    message: str


Locator = Callable[[Problem], str]


def validate(template: Template, datatypes: set[str] | None = None, locate: Locator | None = None) -> None:
    """Raise DagError listing every problem of ``template``; ``datatypes``: the registered names."""
    problems = find_problems(template, datatypes)
    if problems:
        where = locate or (lambda problem: "")
        raise DagError(_format(where(p), p.message) for p in problems)


def find_problems(template: Template, datatypes: set[str] | None = None) -> list[Problem]:
    """Every problem of ``template``, in file order within each kind of check."""
    problems = _template_problems(template)
    for vertex in template.vertices.values():
        problems += _vertex_problems(vertex)
    for index, edge in enumerate(template.edges):
        problems += _edge_problems(template, index, edge, datatypes)
    problems += _duplicate_ids(template)
    for vertex in template.vertices.values():
        problems += _datatag_clashes(template, vertex)
    if not any(p.kind == "data" and p.field in ("source", "target") for p in problems):
        problems += _cycle(template)
    return problems


def _template_problems(template: Template) -> list[Problem]:
    problems = []
    if not isinstance(template.name, str) or not NAME_RE.match(template.name):
        problems.append(Problem("template", None, "name", f"template name {template.name!r} is not a valid name "
                                "(letters, digits and _.:@+-, starting with a letter or digit, at most 128)"))
    if not isinstance(template.description, str):
        problems.append(Problem("template", None, "description", "description must be a string"))
    if not template.vertices:
        problems.append(Problem("template", None, "jobs", f"template {template.name!r} has no jobs (an empty DAG)"))
    return problems


def _vertex_problems(vertex: Vertex) -> list[Problem]:
    def bad(field_: str | None, message: str) -> Problem:
        return Problem("job", vertex.name, field_, f"job {vertex.name!r}: {message}")

    problems = []
    if not isinstance(vertex.name, str) or not VERTEX_NAME_RE.match(vertex.name):
        problems.append(bad(None, "is not a simple name (letters, digits and _.-, starting with a letter or digit)"))
    if not isinstance(vertex.jobtype, str) or not NAME_RE.match(vertex.jobtype):
        problems.append(bad("jobtype", f"jobtype {vertex.jobtype!r} is not a valid name"))
    if not isinstance(vertex.noop, bool):
        problems.append(bad("noop", f"noop must be true or false, got {vertex.noop!r}"))
    if not isinstance(vertex.payload, str):
        problems.append(bad("payload", f"payload must be a string, got {_type_name(vertex.payload)}"))
    elif vertex.noop is True and vertex.payload.strip():
        problems.append(bad("payload", "is a NOOP and must not have a payload (a NOOP is never run)"))
    elif vertex.noop is False and not vertex.payload.strip():
        problems.append(bad("payload", "has no payload (give one, or make it a NOOP with noop: true)"))
    if not _is_int(vertex.priority):
        problems.append(bad("priority", f"priority must be an integer, got {vertex.priority!r}"))
    if vertex.timelimit is not None and not (_is_int(vertex.timelimit) and vertex.timelimit > 0):
        problems.append(bad("timelimit", f"timelimit must be a positive integer (seconds), got {vertex.timelimit!r}"))
    if vertex.eta is not None and not (_is_int(vertex.eta) and vertex.eta > 0):
        problems.append(bad("eta", f"eta must be a positive integer (seconds), got {vertex.eta!r}"))
    return problems + _env_problems(vertex, bad)


def _env_problems(vertex: Vertex, bad: Callable[[str, str], Problem]) -> list[Problem]:
    if not isinstance(vertex.env, dict):
        return [bad("env", f"env must be a mapping of NAME: value, got {_type_name(vertex.env)}")]
    problems = []
    for key, value in vertex.env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            problems.append(bad("env", f"env: {key!r} is not a valid environment variable name"))
        if not isinstance(value, str):
            problems.append(bad("env", f"env {key}: must be a string or a number, got {_type_name(value)}"))
    return problems


def _edge_problems(template: Template, index: int, edge: Edge, datatypes: set[str] | None) -> list[Problem]:
    def bad(field_: str | None, message: str) -> Problem:
        return Problem("data", index, field_, f"{edge.label()}: {message}")

    problems = []
    if not isinstance(edge.id, str) or not VERTEX_NAME_RE.match(edge.id):
        problems.append(bad("id", "the id is not a simple name (letters, digits and _.-)"))
    for name in EDGE_TEXT_FIELDS:
        if not isinstance(getattr(edge, name), str):
            problems.append(bad(name, f"{name} must be a string, got {_type_name(getattr(edge, name))}"))
    if problems:
        return problems
    if not edge.source:
        problems.append(bad("source", "has no source: data must come from a job or a NOOP vertex"))
    elif edge.source not in template.vertices:
        problems.append(bad("source", f"source {edge.source!r} is not a job of this template"))
    if not edge.target:
        problems.append(bad("target", "has no target: a leaf must be a job, not data (data must flow into a "
                                      "job or a NOOP vertex; add a NOOP sink)"))
    elif edge.target not in template.vertices:
        problems.append(bad("target", f"target {edge.target!r} is not a job of this template"))
    if edge.datatag and not ENV_NAME_RE.match(edge.datatag):
        problems.append(bad("datatag", f"datatag {edge.datatag!r} is not a valid environment variable name"))
    if datatypes is not None and edge.datatype and edge.datatype not in datatypes:
        known = ", ".join(sorted(datatypes)) or "none"
        problems.append(bad("datatype", f"unknown data type {edge.datatype!r} (registered: {known})"))
    return problems


def _duplicate_ids(template: Template) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for index, edge in enumerate(template.edges):
        if not isinstance(edge.id, str):
            continue
        if edge.id in first:
            problems.append(Problem("data", index, "id", f"{edge.label()}: duplicate data id {edge.id!r} (also data "
                                    f"#{first[edge.id] + 1}; an edge without id is e<position>)"))
        else:
            first[edge.id] = index
    return problems


def _datatag_clashes(template: Template, vertex: Vertex) -> list[Problem]:
    """A job receives each data tag as one variable: two edges, or env and an edge, must not share one."""
    if vertex.noop or not isinstance(vertex.env, dict):
        return []
    problems = []
    seen: dict[str, Edge] = {}
    for index, edge in enumerate(template.edges):
        tag = edge.datatag
        if vertex.name not in (edge.source, edge.target) or not isinstance(tag, str) or not tag:
            continue
        if tag in seen:
            problems.append(Problem("data", index, "datatag",
                                    f"job {vertex.name!r}: datatag {tag!r} is used by {seen[tag].label()} and by "
                                    f"{edge.label()}; ${tag} would carry one file's path over the other's"))
        else:
            seen[tag] = edge
        if tag in vertex.env:
            problems.append(Problem("job", vertex.name, "env",
                                    f"job {vertex.name!r}: env sets {tag}, which {edge.label()} sets to its file's "
                                    "path"))
    return problems


def _cycle(template: Template) -> list[Problem]:
    cycle = _find_cycle(template)
    if not cycle:
        return []
    return [Problem("data", cycle[0], None, _cycle_message(template))]


def _find_cycle(template: Template) -> list[int]:
    """Positions of the edges of one cycle (empty when the graph is acyclic)."""
    import networkx as nx

    graph = nx.MultiDiGraph()
    graph.add_nodes_from(template.vertices)
    for index, edge in enumerate(template.edges):
        graph.add_edge(edge.source, edge.target, key=index)
    try:
        return [key for _, _, key in nx.find_cycle(graph)]
    except nx.NetworkXNoCycle:
        return []


def _cycle_message(template: Template) -> str:
    cycle = [template.edges[i] for i in _find_cycle(template)]
    return "cycle: " + " -> ".join([edge.source for edge in cycle] + [cycle[-1].target]) if cycle else "cycle"


def _format(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", bool: "true/false", int: "a number", float: "a number",
            str: "a string"}.get(type(value), type(value).__name__)


# --- YAML -------------------------------------------------------------------------------------
def load_yaml(text: str, filename: str = "<template>", datatypes: set[str] | None = None) -> Template:
    """Read and validate a template in p3s YAML; DagError says ``file:line:col: what`` for each problem."""
    reader = _YamlReader(filename)
    template = reader.read(_compose(text, filename))
    validate(template, datatypes, reader.locate)
    return template


def _compose(text: str, filename: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or str(exc)
        if exc.problem and exc.context:
            message += f" ({exc.context}" + (f" at line {exc.context_mark.line + 1})" if exc.context_mark else ")")
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise DagError(f"{where}: YAML syntax: {message}") from None
    except yaml.YAMLError as exc:
        raise DagError(f"{filename}: YAML syntax: {exc}") from None


class _YamlReader:
    """Turns a composed YAML node tree into a Template, remembering where each part was written."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[str] = []
        self.marks: dict[tuple, yaml.Mark] = {}
        self.constructor = yaml.SafeLoader("")

    def read(self, root: yaml.Node | None) -> Template:
        if root is None:
            raise DagError(f"{self.filename}:1:1: the template is empty (expected name, jobs and data)")
        self.marks[("template", None, None)] = root.start_mark
        top = self.mapping(root, "the template", TEMPLATE_KEYS)
        if "name" not in top:
            self.error(root, "the template has no name (name: is required)")
        if "jobs" not in top:
            self.error(root, "the template has no jobs (jobs: is required)")
        fields = {key: self.value(value, ("template", None, key), text=True) for key, (_, value) in top.items()
                  if key in ("name", "description")}
        template = Template(fields.get("name", ""), fields.get("description", "") or "")
        if "jobs" in top:
            self.marks[("template", None, "jobs")] = top["jobs"][0].start_mark
            template.vertices = self.jobs(top["jobs"][1])
        if "data" in top:
            template.edges = self.edges(top["data"][1])
        if self.errors:
            raise DagError(self.errors)
        return template

    def jobs(self, node: yaml.Node) -> dict[str, Vertex]:
        vertices = {}
        for name, (key_node, value) in self.mapping(node, "jobs", None).items():
            self.marks[("job", name, None)] = key_node.start_mark
            vertices[name] = self.job(name, value)
        return vertices

    def job(self, name: str, node: yaml.Node) -> Vertex:
        fields = {}
        for key, (_, value) in self.mapping(node, f"job {name!r}", JOB_KEYS).items():
            if key == "env":
                fields[key] = self.env(name, value)
            else:
                fields[key] = self.value(value, ("job", name, key), text=key in ("jobtype", "payload"))
        if fields.get("noop") is True and fields.get("jobtype", NOOP) != NOOP:
            self.error(node, f"job {name!r}: a NOOP cannot have jobtype {fields['jobtype']!r}")
        if fields.get("noop") is False and fields.get("jobtype") == NOOP:
            self.error(node, f"job {name!r}: jobtype noop makes it a NOOP, but noop is false")
        if fields.get("noop") is None:
            fields.pop("noop", None)
        return Vertex(name, **fields)

    def env(self, vertex: str, node: yaml.Node) -> Any:
        self.marks[("job", vertex, "env")] = node.start_mark
        if not isinstance(node, yaml.MappingNode):
            return self.value(node, ("job", vertex, "env"))
        env = {}
        for key, (_, value) in self.mapping(node, f"job {vertex!r} env", None).items():
            env[key] = self.value(value, ("job", vertex, "env", key), text=True)
        return env

    def edges(self, node: yaml.Node) -> list[Edge]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "data must be a list of edges (- {source: …, target: …})")
            return []
        return [self.edge(index, item) for index, item in enumerate(node.value)]

    def edge(self, index: int, node: yaml.Node) -> Edge:
        self.marks[("data", index, None)] = node.start_mark
        fields = {key: self.value(value, ("data", index, key), text=True)
                  for key, (_, value) in self.mapping(node, f"data #{index + 1}", EDGE_KEYS).items()}
        fields = {key: "" if value is None else value for key, value in fields.items()}
        if fields.get("id", "") == "":
            fields["id"] = f"e{index + 1}"
        return Edge(**{"source": "", "target": "", **fields})

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...] | None) -> dict[str, tuple]:
        """The entries of a mapping node by key text; unknown or repeated keys are errors."""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping, not {_node_kind(node)}")
            return {}
        entries: dict[str, tuple] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_node, f"{what}: a key must be a plain name, not {_node_kind(key_node)}")
                continue
            key = key_node.value
            if allowed is not None and key not in allowed:
                self.error(key_node, f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})")
            elif key in entries:
                self.error(key_node, f"{what}: {key!r} is given twice")
            else:
                entries[key] = (key_node, value)
        return entries

    def value(self, node: yaml.Node, where: tuple, text: bool = False) -> Any:
        """The node's Python value; with ``text``, a number keeps the text it was written as."""
        self.marks[where] = node.start_mark
        if text and isinstance(node, yaml.ScalarNode) and node.tag.endswith((":int", ":float")):
            return node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, f"cannot read this value: {getattr(exc, 'problem', None) or exc}")
            return None

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append(f"{self.at(node.start_mark)}: {message}")

    def at(self, mark: yaml.Mark) -> str:
        return f"{self.filename}:{mark.line + 1}:{mark.column + 1}"

    def locate(self, problem: Problem) -> str:
        for key in ((problem.kind, problem.key, problem.field), (problem.kind, problem.key, None),
                    ("template", None, problem.field), ("template", None, None)):
            if key in self.marks:
                return self.at(self.marks[key])
        return self.filename


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the value {node.value!r}"


class _YamlDumper(yaml.SafeDumper):
    """Indents lists under their key and writes multi-line text as a literal block."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.rstrip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_YamlDumper.add_representer(str, _represent_str)


def _vertex_yaml(vertex: Vertex) -> dict[str, Any]:
    out: dict[str, Any] = {"noop": True} if vertex.noop else {}
    if not vertex.noop and vertex.jobtype != DEFAULT_JOBTYPE:
        out["jobtype"] = vertex.jobtype
    if vertex.payload:
        out["payload"] = vertex.payload
    if vertex.env:
        out["env"] = dict(vertex.env)
    if vertex.priority:
        out["priority"] = vertex.priority
    if vertex.timelimit is not None:
        out["timelimit"] = vertex.timelimit
    if vertex.eta is not None:
        out["eta"] = vertex.eta
    return out


def _edge_yaml(edge: Edge) -> dict[str, str]:
    out = {"id": edge.id, "source": edge.source, "target": edge.target}
    out.update((name, getattr(edge, name)) for name in EDGE_KEYS[3:] if getattr(edge, name))
    return out


# --- GraphML ----------------------------------------------------------------------------------
def load_graphml(text: str, filename: str = "<graphml>", name: str | None = None,
                 datatypes: set[str] | None = None) -> Template:
    """Read and validate a template in the original p3s GraphML.

    The template's name is ``name`` if given, else the graph's ``name`` attribute or id, else the
    file name without its extension.
    """
    root = _parse_xml(text, filename)
    graph = _child(root, "graph")
    if _local(root.tag) != "graphml" or graph is None:
        raise DagError(f"{filename}: not GraphML (expected <graphml> with a <graph>)")
    reader = _GraphmlReader(filename, _graphml_keys(root))
    template = reader.read(graph, name)
    validate(template, datatypes, lambda problem: filename)
    return template


def _parse_xml(text: str, filename: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        line, column = exc.position
        message = re.sub(r": line \d+, column \d+$", "", str(exc))
        raise DagError(f"{filename}:{line}:{column + 1}: XML syntax: {message}") from None


@dataclass
class _Key:
    name: str
    domain: str
    default: str | None


def _graphml_keys(root: ElementTree.Element) -> dict[str, _Key]:
    keys = {}
    for element in root:
        if _local(element.tag) == "key" and element.get("attr.name"):
            default = _child(element, "default")
            keys[element.get("id", "")] = _Key(element.get("attr.name", ""), element.get("for", "all"),
                                              None if default is None else default.text or "")
    return keys


class _GraphmlReader:
    """Turns a GraphML <graph> element into a Template."""

    def __init__(self, filename: str, keys: dict[str, _Key]) -> None:
        self.filename = filename
        self.keys = keys
        self.errors: list[str] = []

    def read(self, graph: ElementTree.Element, name: str | None) -> Template:
        attrs = self.attributes(graph, "graph", "the graph", ("name", "description"))
        stem = os.path.splitext(os.path.basename(self.filename))[0]
        fallback = "" if self.filename.startswith("<") else stem
        template = Template(name or attrs.get("name") or graph.get("id") or fallback, attrs.get("description", ""))
        if not template.name:
            self.errors.append(f"{self.filename}: the template has no name (give one)")
        directed = graph.get("edgedefault", "directed") == "directed"
        for element in graph:
            tag = _local(element.tag)
            if tag == "node":
                self.node(template, element)
            elif tag == "edge":
                self.edge(template, element, directed)
            elif tag not in ("data", "desc"):
                self.errors.append(f"{self.filename}: <{tag}> is not supported in a p3s DAG")
        if self.errors:
            raise DagError(self.errors)
        return template

    def node(self, template: Template, element: ElementTree.Element) -> None:
        name = element.get("id", "")
        what = f"job {name!r}"
        if name in template.vertices:
            self.errors.append(f"{self.filename}: {what} is declared twice")
            return
        if _child(element, "graph") is not None:
            self.errors.append(f"{self.filename}: {what}: nested graphs are not supported")
        attrs = self.attributes(element, "node", what, tuple(key for key, _, _ in GRAPHML_NODE_KEYS))
        template.vertices[name] = Vertex(name, jobtype=attrs.get("jobtype") or DEFAULT_JOBTYPE,
                                         payload=attrs.get("payload", ""), env=self.env(attrs.get("env", ""), what),
                                         priority=self.integer(attrs.get("priority", ""), what, "priority") or 0,
                                         timelimit=self.integer(attrs.get("timelimit", ""), what, "timelimit") or None)

    def edge(self, template: Template, element: ElementTree.Element, directed: bool) -> None:
        position = len(template.edges) + 1
        edge = Edge(element.get("id") or f"e{position}", element.get("source", ""), element.get("target", ""))
        if element.get("directed", "true" if directed else "false") != "true":
            self.errors.append(f"{self.filename}: {edge.label()}: undirected edges are not supported")
        attrs = self.attributes(element, "edge", edge.label(), EDGE_KEYS[3:])
        template.edges.append(dataclasses.replace(edge, **attrs))

    def attributes(self, element: ElementTree.Element, domain: str, what: str,
                   known: tuple[str, ...]) -> dict[str, str]:
        """Values by attribute name: the key defaults, then the element's <data>."""
        values = {key.name: key.default for key in self.keys.values()
                  if key.domain in (domain, "all") and key.default is not None and key.name in known}
        for data in element:
            if _local(data.tag) != "data":
                continue
            key = self.keys.get(data.get("key", ""))
            if key is None or key.name.lower() in DISPLAY_ATTRIBUTES:
                continue
            if key.domain not in (domain, "all") or key.name not in known:
                self.errors.append(f"{self.filename}: {what}: unknown attribute {key.name!r} "
                                   f"(known: {', '.join(known)})")
                continue
            values[key.name] = data.text or ""
        return values

    def env(self, text: str, what: str) -> dict[str, Any]:
        if not text.strip():
            return {}
        try:
            env = json.loads(text)
        except json.JSONDecodeError as exc:
            self.errors.append(f"{self.filename}: {what}: env is not valid JSON ({exc})")
            return {}
        if not isinstance(env, dict):
            self.errors.append(f"{self.filename}: {what}: env must be a JSON object, got {_type_name(env)}")
            return {}
        return {key: json.dumps(value) if _is_number(value) else value for key, value in env.items()}

    def integer(self, text: str, what: str, name: str) -> int | None:
        if not text.strip():
            return None
        try:
            return int(text.strip())
        except ValueError:
            self.errors.append(f"{self.filename}: {what}: {name} must be an integer, got {text!r}")
            return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element, tag: str) -> ElementTree.Element | None:
    return next((child for child in element if _local(child.tag) == tag), None)


def _vertex_graphml(vertex: Vertex) -> dict[str, str]:
    return {"payload": vertex.payload, "env": json.dumps(vertex.env, separators=(",", ":")),
            "jobtype": vertex.jobtype, "timelimit": str(vertex.timelimit or 0), "priority": str(vertex.priority)}


def _graphml_data(indent: str, keys: tuple[tuple[str, str, str], ...], values: dict[str, Any]) -> list[str]:
    return [f'{indent}<data key="{key}">{_xml_text(values[name])}</data>' for name, _, key in keys]


def _xml_text(value: str) -> str:
    return escape(value, {"\r": "&#13;"})


# --- files ------------------------------------------------------------------------------------
def load_file(path: str, datatypes: set[str] | None = None) -> Template:
    """Read a template file: GraphML when it ends in .graphml or starts with '<', else YAML."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.endswith(".graphml") or text.lstrip().startswith("<"):
        return load_graphml(text, path, datatypes=datatypes)
    return load_yaml(text, path, datatypes)
