"""One meaning per short flag across every p3s command, as the README's table says.

Every command of setup.py (and the pilot itself, ``python3 -m p3s.pilot``) builds its parser here;
each short flag's meaning is its long option. A letter meaning two things fails, so does a letter
missing from the README's table or a table row no command uses; a retired spelling exits 2 and
names what to write instead.
"""
from __future__ import annotations

import argparse
import ast
import collections
import importlib
import re
from pathlib import Path

import pytest

from p3s.pilot.flags import Retired

REPO = Path(__file__).resolve().parent.parent
SHORT = re.compile(r"^-[A-Za-z0-9]$")
# One meaning under two long names: the type of what the command is about (jobs, files), how many
# pilots (per node in p3s-fleet, nominal in p3s-site), the uuid of what it is about (p3s-event: a job).
SAME = {"--datatype": "--jobtype", "--type": "--jobtype", "--per-node": "--pilots", "--job": "--uuid"}


def commands() -> dict[str, str]:
    """setup.py's console scripts: name -> module."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMMANDS":
            return {name: target.split(":")[0] for name, target in ast.literal_eval(node.value).items()}
    raise AssertionError("setup.py has no COMMANDS")


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, importlib.import_module(module).build_parser()) for name, module in commands().items()]
    from p3s.pilot.cli import run_parser
    return found + [("p3s-pilot (running a pilot)", run_parser())]


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    """(path, action) for every option of ``parser`` and its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from walk(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def meaning(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return SAME.get(longs[0], longs[0]) if longs else action.dest


def uses() -> dict[str, dict[str, list[str]]]:
    """short flag -> meaning -> where ("p3s-job submit", …)."""
    table: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, parser in parsers():
        for path, action in walk(parser, (name,)):
            if isinstance(action, Retired):
                continue
            for flag in filter(SHORT.match, action.option_strings):
                table[flag][meaning(action)].append(" ".join(path))
    table.pop("-h", None)
    return table


def readme_flags() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Short flags", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"\| `(-[A-Za-z0-9])` \|", section))


def test_every_command_has_a_parser():
    assert len(parsers()) == len(commands()) + 1


def test_each_short_flag_means_one_thing_in_every_command():
    found = uses()
    clashes = {flag: {m: sorted(set(where))[:3] for m, where in meanings.items()}
               for flag, meanings in found.items() if len(meanings) > 1}
    assert not clashes, f"short flags with two meanings: {clashes}"


def test_the_readme_table_lists_every_short_flag_and_no_other():
    used, listed = set(uses()), readme_flags()
    assert used - listed == set(), "short flags missing from the README's table"
    assert listed - used == set(), "README rows no command uses"


def test_a_retired_spelling_exits_2_naming_the_new_one(capsys):
    built = dict(parsers())
    retired = [(name, path, action) for name, parser in built.items()
               for path, action in walk(parser, (name,)) if isinstance(action, Retired)]
    assert len(retired) >= 6
    for name, path, action in retired:
        parser, flag = built[name], action.option_strings[0]
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*path[1:], flag, "x"])
        assert exit_.value.code == 2
        message = capsys.readouterr().err
        assert f"error: {flag} " in message and re.search(r"write -", message), message
