"""DAG templates: the YAML and GraphML readers, validation messages, conversions and examples."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import networkx as nx
import pytest

from p3s import dag
from p3s.dag import DagError, Edge, Template, Vertex

DAGS = Path(__file__).resolve().parent.parent / "conf" / "dags"
EXAMPLES = sorted(DAGS.glob("*.yaml"))


def text(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


def line_of(source: str, needle: str) -> int:
    """The 1-based line of the first line of ``source`` that contains ``needle``."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if needle in line)


def yaml_error(source: str, datatypes: set[str] | None = None) -> str:
    with pytest.raises(DagError) as caught:
        dag.load_yaml(source, "t.yaml", datatypes)
    return str(caught.value)


CHAIN = text("""
    name: chain
    jobs:
      a: {payload: "step a"}
      b: {payload: "step b"}
      c: {payload: "step c"}
    data:
      - {source: a, target: b, datatag: AB}
      - {source: b, target: c, datatag: BC}
""")

TRICKY = Template("tricky", "quotes ' \" & <angle> and\nsecond line — ünïcode", {
    "IN": Vertex("IN", noop=True, env={"SITE": "cern"}),
    "job.1": Vertex("job.1", jobtype="reco", payload="set -e\nprintf '%s\\n' \"$A\" > $B && cat <$A\n",
                    env={"P3S_EXECMODE": "1", "MODE": "0755", "EMPTY": ""}, priority=-3, timelimit=45),
    "sink": Vertex("sink", payload="true", priority=7),
}, [
    Edge("e1", "IN", "job.1", name="in&put.txt", dirpath="/data/a b", datatype="TXT", datatag="A",
         comment="tab\there"),
    Edge("x", "job.1", "sink", datatag="B"),
    Edge("y", "job.1", "sink", name="second.txt", datatag="C", comment="parallel to x"),
])


# --- the examples -----------------------------------------------------------------------------
def test_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"1filter", "3filters", "twostep", "diamond"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_loads_and_round_trips(path):
    template = dag.load_file(str(path), datatypes={"TXT"})
    assert template.name == path.stem
    assert dag.load_yaml(template.to_yaml(), datatypes={"TXT"}) == template
    assert dag.load_graphml(template.to_graphml(), datatypes={"TXT"}) == template
    assert Template.from_dict(json.loads(json.dumps(template.to_dict()))) == template
    assert all(edge.datatype == "TXT" and edge.datatag for edge in template.edges)
    assert all(v.noop or "P3S_EXECMODE" in v.env for v in template.vertices.values())


def test_1filter():
    template = dag.load_file(str(DAGS / "1filter.yaml"))
    assert list(template.vertices) == ["NOOP1", "filter", "NOOP2"]
    assert template.roots() == ["NOOP1"] and template.leaves() == ["NOOP2"]
    assert template.topological_order() == ["NOOP1", "filter", "NOOP2"]
    flt = template.vertices["filter"]
    assert flt.payload == "grep -c TEST $INPTXT > $OUTTXT"
    assert flt.env == {"P3S_EXECMODE": "SHELL"} and flt.jobtype == "filter" and not flt.noop
    assert template.vertices["NOOP1"].noop and template.vertices["NOOP1"].jobtype == "noop"
    assert [(e.source, e.target, e.datatag) for e in template.edges] == [("NOOP1", "filter", "INPTXT"),
                                                                          ("filter", "NOOP2", "OUTTXT")]


def test_3filters_fans_out_and_in():
    template = dag.load_file(str(DAGS / "3filters.yaml"))
    assert template.children("NOOP1") == ["filter1", "filter2", "filter3"]
    assert template.parents("NOOP2") == ["filter1", "filter2", "filter3"]
    assert {e.datatag for e in template.edges if e.source == "NOOP1"} == {"INPTXT"}
    order = template.topological_order()
    assert order[0] == "NOOP1" and order[-1] == "NOOP2"


def test_twostep_is_a_chain():
    template = dag.load_file(str(DAGS / "twostep.yaml"))
    assert template.topological_order() == ["NOOP1", "reduction", "reco", "NOOP2"]
    assert [template.parents(v) for v in template.vertices] == [[], ["NOOP1"], ["reduction"], ["reco"]]


def test_diamond_has_parallel_edges():
    template = dag.load_file(str(DAGS / "diamond.yaml"))
    graph = template.graph()
    assert isinstance(graph, nx.MultiDiGraph)
    assert graph.number_of_edges("b", "d") == 2
    assert set(graph["b"]["d"]) == {"match", "rest"}
    assert graph["b"]["d"]["match"]["datatag"] == "BMATCH"
    assert template.parents("d") == ["b", "c"]
    assert template.children("a") == ["b", "c"]
    assert template.topological_order() == ["IN", "a", "b", "c", "d", "OUT"]


# --- conversions ------------------------------------------------------------------------------
def test_dict_round_trip_is_exact_and_json():
    data = TRICKY.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert [v["name"] for v in data["vertices"]] == ["IN", "job.1", "sink"]
    back = Template.from_dict(data)
    assert back == TRICKY and list(back.vertices) == list(TRICKY.vertices)
    assert back.to_dict() == data


def test_yaml_round_trip_is_exact():
    dag.validate(TRICKY)
    back = dag.load_yaml(TRICKY.to_yaml())
    assert back.to_dict() == TRICKY.to_dict()


def test_graphml_round_trip_is_exact():
    back = dag.load_graphml(TRICKY.to_graphml())
    assert back.to_dict() == TRICKY.to_dict()
    assert back.graph().number_of_edges("job.1", "sink") == 2


def test_yaml_export_leaves_defaults_out():
    exported = dag.load_yaml(CHAIN).to_yaml()
    assert "jobtype" not in exported and "priority" not in exported and "timelimit" not in exported
    assert "id: e1" in exported and "id: e2" in exported


def test_graph_attributes():
    graph = TRICKY.graph()
    assert list(graph.nodes) == ["IN", "job.1", "sink"]
    assert graph.nodes["job.1"]["timelimit"] == 45 and graph.nodes["IN"]["noop"]
    assert sorted(k for _, _, k in graph.edges(keys=True)) == ["e1", "x", "y"]


def test_from_dict_rejects_malformed():
    with pytest.raises(DagError, match="malformed"):
        Template.from_dict({"name": "x", "vertices": [{"nome": "a"}], "edges": []})


def test_vertex_noop_and_jobtype_agree():
    assert Vertex("a", noop=True).jobtype == "noop"
    assert Vertex("a", jobtype="noop").noop


# --- reading YAML -----------------------------------------------------------------------------
def test_edge_ids_are_assigned_by_position():
    template = dag.load_yaml(text("""
        name: ids
        jobs:
          a: {payload: x}
          b: {payload: y}
        data:
          - {source: a, target: b, datatag: T1}
          - {id: mine, source: a, target: b, datatag: T2}
          - {source: a, target: b, datatag: T3}
    """))
    assert [e.id for e in template.edges] == ["e1", "mine", "e3"]


def test_env_numbers_keep_their_text():
    template = dag.load_yaml(text("""
        name: env
        jobs:
          a: {payload: x, env: {MODE: 0755, RATIO: 1.50, NAME: plain}}
    """))
    assert template.vertices["a"].env == {"MODE": "0755", "RATIO": "1.50", "NAME": "plain"}


def test_jobs_without_data_and_several_roots():
    template = dag.load_yaml(text("""
        name: two
        description: no data at all
        jobs:
          one: {payload: "true"}
          two: {payload: "true", jobtype: other, priority: 2, timelimit: 5}
    """))
    assert template.roots() == ["one", "two"] and template.edges == []
    assert template.vertices["two"] == Vertex("two", jobtype="other", payload="true", priority=2, timelimit=5)


def test_noop_may_share_a_datatag_across_edges():
    template = dag.load_yaml(text("""
        name: fan
        jobs:
          IN: {noop: true}
          a: {payload: x}
          b: {payload: y}
        data:
          - {source: IN, target: a, datatag: INPUT}
          - {source: IN, target: b, datatag: INPUT}
    """))
    assert template.children("IN") == ["a", "b"]


def test_jobtype_noop_makes_a_noop():
    template = dag.load_yaml("name: n\njobs:\n  x: {jobtype: noop}\n")
    assert template.vertices["x"].noop


def test_datatypes_are_checked_only_when_given():
    assert dag.load_yaml(CHAIN.replace("datatag: AB", "datatag: AB, datatype: CSV")).edges[0].datatype == "CSV"
    assert dag.load_yaml(CHAIN.replace("datatag: AB", "datatag: AB, datatype: TXT"), datatypes={"TXT"})


# --- YAML validation messages -----------------------------------------------------------------
CASES = {
    "cycle": (text("""
        name: loop
        jobs:
          a: {payload: x}
          b: {payload: y}
          c: {payload: z}
        data:
          - {source: a, target: b, datatag: AB}
          - {source: b, target: c, datatag: BC}
          - {source: c, target: a, datatag: CA}
        """), ["cycle: a -> b -> c -> a"], "source: a, target: b"),
    "self loop": (text("""
        name: loop
        jobs:
          a: {payload: x}
        data:
          - {source: a, target: a, datatag: AA}
        """), ["cycle: a -> a"], "source: a, target: a"),
    "unknown target": (CHAIN.replace("target: c", "target: nowhere"),
                       ["'nowhere'", "not a job"], "target: nowhere"),
    "unknown source": (CHAIN.replace("source: b", "source: ghost"), ["'ghost'", "not a job"], "source: ghost"),
    "duplicate ids": (text("""
        name: dup
        jobs:
          a: {payload: x}
          b: {payload: y}
        data:
          - {id: same, source: a, target: b, datatag: T1}
          - {id: same, source: a, target: b, datatag: T2}
        """), ["duplicate data id 'same'"], "datatag: T2"),
    "explicit id clashes with an assigned one": (text("""
        name: dup
        jobs:
          a: {payload: x}
          b: {payload: y}
        data:
          - {id: e2, source: a, target: b, datatag: T1}
          - {source: a, target: b, datatag: T2}
        """), ["duplicate data id 'e2'", "e<position>"], "datatag: T2"),
    "leaf is data": (text("""
        name: leaf
        jobs:
          a: {payload: x}
        data:
          - {id: out, source: a, datatag: OUT}
        """), ["'out'", "no target", "leaf"], "id: out"),
    "empty target": (text("""
        name: leaf
        jobs:
          a: {payload: x}
        data:
          - {id: out, source: a, target: "", datatag: OUT}
        """), ["'out'", "no target"], "id: out"),
    "no source": (text("""
        name: orphan
        jobs:
          a: {payload: x}
        data:
          - {id: in, target: a, datatag: IN}
        """), ["'in'", "no source"], "id: in"),
    "bad datatag": (CHAIN.replace("datatag: BC", "datatag: 2BAD-TAG"),
                    ["'2BAD-TAG'", "environment variable"], "2BAD-TAG"),
    "datatag twice on a job": (text("""
        name: twice
        jobs:
          a: {payload: x}
          b: {payload: y}
          c: {payload: z}
        data:
          - {id: one, source: a, target: c, datatag: SAME}
          - {id: two, source: b, target: c, datatag: SAME}
        """), ["job 'c'", "'SAME'", "'one'", "'two'"], "id: two"),
    "env shadowed by a datatag": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", env: {AB: x}}'),
                                  ["job 'b'", "AB"], "env: {AB: x}"),
    "unknown datatype": (CHAIN.replace("datatag: BC", "datatag: BC, datatype: CSV"),
                         ["'CSV'", "unknown data type", "TXT"], "datatype: CSV"),
    "priority not an int": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", priority: high}'),
                            ["job 'b'", "priority", "'high'"], "priority: high"),
    "priority bool": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", priority: true}'),
                      ["job 'b'", "priority"], "priority: true"),
    "env not a mapping": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", env: [A, B]}'),
                          ["job 'b'", "env", "mapping"], "env: [A, B]"),
    "env value a list": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", env: {A: [1]}}'),
                         ["job 'b'", "env A", "string or a number"], "env: {A: [1]}"),
    "env value bool": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", env: {A: yes}}'),
                       ["job 'b'", "env A"], "env: {A: yes}"),
    "env bad name": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", env: {1A: x}}'),
                     ["job 'b'", "'1A'", "environment variable"], "env: {1A: x}"),
    "timelimit zero": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", timelimit: 0}'),
                       ["job 'b'", "timelimit", "positive"], "timelimit: 0"),
    "timelimit text": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", timelimit: "10"}'),
                       ["job 'b'", "timelimit"], 'timelimit: "10"'),
    "no payload": (CHAIN.replace('b: {payload: "step b"}', "b: {jobtype: reco}"),
                   ["job 'b'", "no payload"], "b: {jobtype: reco}"),
    "blank payload": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "  "}'),
                      ["job 'b'", "no payload"], 'b: {payload: "  "}'),
    "noop with payload": (CHAIN.replace('b: {payload: "step b"}', 'b: {noop: true, payload: "step b"}'),
                          ["job 'b'", "NOOP", "payload"], "b: {noop: true"),
    "noop with another jobtype": (CHAIN.replace('b: {payload: "step b"}', "b: {noop: true, jobtype: reco}"),
                                  ["job 'b'", "NOOP", "'reco'"], "b: {noop: true"),
    "noop not a bool": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: x, noop: maybe}'),
                        ["job 'b'", "noop"], "noop: maybe"),
    "bad vertex name": (CHAIN.replace("c: {payload", "c d: {payload").replace("target: c", "target: c d"),
                        ["job 'c d'", "simple name"], "c d: {payload"),
    "vertex name starting with an underscore": (
        CHAIN.replace("a: {payload", "_a: {payload").replace("source: a", "source: _a"),
        ["job '_a'", "simple name"], "_a: {payload"),
    "bad edge id": (CHAIN.replace("- {source: b", "- {id: 'a b', source: b"), ["'a b'", "id"], "id: 'a b'"),
    "empty dag": ("name: empty\njobs: {}\n", ["'empty'", "no jobs"], "jobs: {}"),
    "no jobs key": ("name: empty\ndescription: nothing\n", ["no jobs"], "name: empty"),
    "no name": ('jobs:\n  a: {payload: x}\n', ["no name"], "jobs:"),
    "bad template name": ('name: "has space"\njobs:\n  a: {payload: x}\n', ["'has space'", "name"], "name:"),
    "unknown top-level key": (CHAIN + "extra: 1\n", ["unknown key 'extra'"], "extra: 1"),
    "unknown job key": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b", cmd: x}'),
                        ["job 'b'", "unknown key 'cmd'"], "cmd: x"),
    "unknown data key": (CHAIN.replace("datatag: BC", "datatag: BC, file: x.txt"),
                         ["data #2", "unknown key 'file'"], "file: x.txt"),
    "job given twice": (CHAIN.replace('c: {payload: "step c"}', 'c: {payload: "step c"}\n  b: {payload: again}'),
                        ["'b'", "twice"], "b: {payload: again}"),
    "job not a mapping": (CHAIN.replace('b: {payload: "step b"}', 'b: [echo]'),
                          ["job 'b'", "mapping"], "b: [echo]"),
    "data not a list": (text("""
        name: x
        jobs:
          a: {payload: x}
        data: {source: a}
        """), ["data must be a list"], "data:"),
    "payload not text": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: [a, b]}'),
                         ["job 'b'", "payload must be a string"], "b: {payload: [a, b]}"),
    "yaml syntax": (CHAIN.replace('b: {payload: "step b"}', 'b: {payload: "step b"'),
                    ["YAML syntax", "flow mapping at line 4"], 'c: {payload'),
    "yaml tab": (CHAIN.replace('  b: {payload: "step b"}', '\tb: {payload: "step b"}'),
                 ["YAML syntax", "\\t"], 'b: {payload: "step b"'),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_yaml_validation_message(case):
    source, expected, line_text = CASES[case]
    message = yaml_error(source, datatypes={"TXT"})
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    line = line_of(source, line_text)
    assert f"t.yaml:{line}:" in message, f"line {line} not in {message!r}"


def test_yaml_syntax_error_has_line_and_column():
    message = yaml_error("name: x\njobs:\n  a: {payload: x\n  b: 1\n")
    assert message.startswith("t.yaml:") and message.split(":")[2].isdigit()


def test_empty_text():
    assert "empty" in yaml_error("")
    assert "mapping" in yaml_error("- a\n- b\n")


def test_all_problems_are_reported_together():
    source = CHAIN.replace('a: {payload: "step a"}', "a: {jobtype: t}").replace("datatag: BC", "datatag: 9")
    with pytest.raises(DagError) as caught:
        dag.load_yaml(source, "t.yaml")
    assert len(caught.value.errors) == 2
    assert f"t.yaml:{line_of(source, 'a: {jobtype')}:" in caught.value.errors[0]
    assert "'9'" in caught.value.errors[1]


def test_validate_a_template_built_in_python():
    template = Template("py", vertices={"a": Vertex("a", payload="x"), "b": Vertex("b", payload="y")},
                        edges=[Edge("e1", "a", "b"), Edge("e2", "b", "a")])
    with pytest.raises(DagError, match="cycle: a -> b -> a"):
        dag.validate(template)
    with pytest.raises(DagError, match="cycle"):
        template.topological_order()


# --- the original's GraphML -------------------------------------------------------------------
ORIGINAL = text("""
    <?xml version='1.0' encoding='utf-8'?>
    <graphml xmlns="http://graphml.graphdrawing.org/xmlns" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">

      <!-- ++++++ JOBS ++++++ -->
      <key attr.name="payload" \tattr.type="string"\tfor="node" id="d101" />
      <key attr.name="env" \t\tattr.type="string"\tfor="node" id="d102" />
      <key attr.name="jobtype" \tattr.type="string"\tfor="node" id="d103" />
      <key attr.name="timelimit" \tattr.type="int"\t\tfor="node" id="d104" />
      <key attr.name="priority" \tattr.type="int"\t\tfor="node" id="d105" />

      <!-- ++++++ DATA ++++++ -->
      <key attr.name="name"\t\tattr.type="string"\tfor="edge" id="d1" />
      <key attr.name="dirpath"\tattr.type="string"\tfor="edge" id="d2" />
      <key attr.name="datatype"\tattr.type="string"\tfor="edge" id="d3" />
      <key attr.name="datatag"\tattr.type="string"\tfor="edge" id="d4" />
      <key attr.name="comment"\tattr.type="string"\tfor="edge" id="d5" />

      <graph edgedefault="directed">
        <node id="NOOP1"> <!-- Dummy node is a placeholder since in-data is external -->
          <data key="d101"></data>
          <data key="d102">{}</data>
          <data key="d103">noop</data>
          <data key="d104">0</data>
          <data key="d105">0</data>
        </node>

        <node id="adc">
          <data key="d101">grep -c TEST $INPTXT > $MEAN; wc -l $INPTXT > $RMS</data>
          <data key="d102">{"P3S_EXECMODE":"SHELL", "NEVENTS": 100}</data>
          <data key="d103">adc</data>
          <data key="d104">7777</data>
          <data key="d105">4</data>
        </node>

        <node id="adcViz">
          <data key="d101">cat $MEAN $RMS</data>
          <data key="d102">{"P3S_EXECMODE":"SHELL"}</data>
          <data key="d103">viz</data>
          <data key="d104">100</data>
          <data key="d105">1</data>
        </node>

        <edge source="NOOP1" target="adc">
          <data key="d1">input.txt</data>
          <data key="d2">/afs/cern.ch/user/m/mxp/</data>
          <data key="d3">TXT</data>
          <data key="d4">INPTXT</data>
          <data key="d5">Simulated input</data>
        </edge>

        <edge source="adc" target="adcViz">
          <data key="d1">mean.txt</data>
          <data key="d4">MEAN</data>
        </edge>

        <edge source="adc" target="adcViz">
          <data key="d1">rms.txt</data>
          <data key="d4">RMS</data>
        </edge>
      </graph>
    </graphml>
""")

EXPECTED = Template("adc", "", {
    "NOOP1": Vertex("NOOP1", jobtype="noop", noop=True),
    "adc": Vertex("adc", jobtype="adc", payload="grep -c TEST $INPTXT > $MEAN; wc -l $INPTXT > $RMS",
                  env={"P3S_EXECMODE": "SHELL", "NEVENTS": "100"}, priority=4, timelimit=7777),
    "adcViz": Vertex("adcViz", jobtype="viz", payload="cat $MEAN $RMS", env={"P3S_EXECMODE": "SHELL"},
                     priority=1, timelimit=100),
}, [
    Edge("e1", "NOOP1", "adc", name="input.txt", dirpath="/afs/cern.ch/user/m/mxp/", datatype="TXT",
         datatag="INPTXT", comment="Simulated input"),
    Edge("e2", "adc", "adcViz", name="mean.txt", datatag="MEAN"),
    Edge("e3", "adc", "adcViz", name="rms.txt", datatag="RMS"),
])


def test_original_graphml_imports():
    template = dag.load_graphml(ORIGINAL, "inputs/misc/adc.graphml", datatypes={"TXT"})
    assert template == EXPECTED
    assert list(template.vertices) == ["NOOP1", "adc", "adcViz"]
    assert template.roots() == ["NOOP1"]
    assert template.graph().number_of_edges("adc", "adcViz") == 2
    assert dag.load_yaml(template.to_yaml()) == EXPECTED


def test_graphml_name():
    assert dag.load_graphml(ORIGINAL, name="given").name == "given"
    assert dag.load_graphml(ORIGINAL.replace('<graph edgedefault', '<graph id="gid" edgedefault')).name == "gid"
    with pytest.raises(DagError, match="no name"):
        dag.load_graphml(ORIGINAL)


def graphml_error(source: str, datatypes: set[str] | None = None) -> str:
    with pytest.raises(DagError) as caught:
        dag.load_graphml(source, "w.graphml", datatypes=datatypes)
    return str(caught.value)


@pytest.mark.parametrize("old, new, expected", [
    ('<edge source="adc" target="adcViz">\n      <data key="d1">rms', '<edge source="adc" target="viz">\n'
     '      <data key="d1">rms', ["'viz'", "not a job"]),
    ('<data key="d102">{}</data>', '<data key="d102">{oops</data>', ["job 'NOOP1'", "JSON"]),
    ('<data key="d102">{}</data>', '<data key="d102">[1]</data>', ["job 'NOOP1'", "JSON object"]),
    ('<data key="d104">100</data>', '<data key="d104">soon</data>', ["job 'adcViz'", "timelimit", "'soon'"]),
    ('<data key="d104">100</data>', '<data key="d104">-5</data>', ["job 'adcViz'", "timelimit"]),
    ('<data key="d101">cat $MEAN $RMS</data>', '<data key="d101"></data>', ["job 'adcViz'", "no payload"]),
    ('<data key="d101"></data>', '<data key="d101">run</data>', ["job 'NOOP1'", "NOOP"]),
    ('<data key="d4">RMS</data>', '<data key="d4">MEAN</data>', ["'MEAN'", "job 'adc'"]),
    ('<data key="d3">TXT</data>', '<data key="d3">ROOT</data>', ["'ROOT'", "unknown data type"]),
    ('<edge source="NOOP1" target="adc">', '<edge id="e2" source="NOOP1" target="adc">', ["duplicate data id 'e2'"]),
    ('<edge source="NOOP1" target="adc">', '<edge source="adcViz" target="adc">', ["cycle: adc -> adcViz -> adc"]),
    ('<node id="adcViz">', '<node id="adc viz">', ["job 'adc viz'", "simple name"]),
    ('<key attr.name="comment"', '<key attr.name="colour"', []),
    ('<key attr.name="comment"', '<key attr.name="remark"', ["unknown attribute 'remark'", "data 'e1'"]),
])
def test_graphml_validation_message(old, new, expected):
    assert old in ORIGINAL
    source = ORIGINAL.replace(old, new, 1)
    if not expected:
        assert dag.load_graphml(source, "w.graphml", datatypes={"TXT"}).edges[0].comment == ""
        return
    message = graphml_error(source, datatypes={"TXT"})
    assert message.startswith("w.graphml: ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_graphml_xml_syntax_error_has_line():
    source = ORIGINAL.replace("</node>", "</nod>", 1)
    message = graphml_error(source)
    assert message.startswith(f"w.graphml:{line_of(source, '</nod>')}:") and "XML syntax" in message


def test_graphml_not_graphml():
    assert "not GraphML" in graphml_error("<html><body/></html>")


def test_load_file_takes_the_name_from_the_file(tmp_path):
    path = tmp_path / "wf7.graphml"
    path.write_text(ORIGINAL)
    assert dag.load_file(str(path)).name == "wf7"


def test_a_bad_noop_flag_is_one_problem():
    with pytest.raises(DagError) as caught:
        dag.load_yaml(CHAIN.replace('b: {payload: "step b"}', "b: {payload: x, noop: maybe}"), "t.yaml")
    assert len(caught.value.errors) == 1 and "noop must be true or false" in caught.value.errors[0]
