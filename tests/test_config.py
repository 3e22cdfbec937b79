"""Configuration: defaults, file, environment, flags; errors that name the key and the file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p3s.config import SETTINGS, ConfigError, load_config, read_config_file

REPO = Path(__file__).resolve().parent.parent


def test_documented_file_lists_every_setting_with_its_default():
    documented = read_config_file(REPO / "conf" / "p3s.yaml")
    assert documented == {s.name: s.default for s in SETTINGS}
    text = (REPO / "conf" / "p3s.yaml").read_text()
    for setting in SETTINGS:
        assert setting.help.split("(")[0].strip()[:40] in text


def test_precedence_default_file_environment_flag(tmp_path):
    path = tmp_path / "p3s.yaml"
    path.write_text("port: 9001\nheartbeat: 7\nlog_level: debug\n")
    assert load_config(None, environ={}).port == 8470
    assert load_config(path, environ={}).port == 9001
    cfg = load_config(path, environ={"P3S_PORT": "9002"})
    assert (cfg.port, cfg.heartbeat, cfg.log_level) == (9002, 7, "DEBUG")
    assert load_config(path, {"port": "9003"}, environ={"P3S_PORT": "9002"}).port == 9003
    assert load_config(None, environ={"P3S_CONFIG": str(path)}).port == 9001
    assert load_config(None, environ={"P3S_NO_AUTH": "yes"}).no_auth is True


@pytest.mark.parametrize("text, expected", [
    ("bogus: 1\n", "unknown key 'bogus'"),
    ("port: eighty\n", "key 'port': expected an integer"),
    ("no_auth: maybe\n", "key 'no_auth': expected true or false"),
    ("port: [1\n", ":2:1: invalid YAML"),
    ("- 1\n", "expected a mapping"),
    ("tokens: [{token: short, role: admin}]\n", "key 'tokens[0]': 'token' must be"),
    ("tokens: [{token: abcdefghijklmnopqrstu, role: boss}]\n", "'role' must be one of"),
    ("log_level: loud\n", "key 'log_level'"),
])
def test_bad_file_errors_name_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value) and expected in str(info.value)


def test_bad_environment_value_is_named():
    with pytest.raises(ConfigError, match="environment P3S_HEARTBEAT: key 'heartbeat'"):
        load_config(None, environ={"P3S_HEARTBEAT": "often"})


def test_server_with_bad_config_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("port: 1\nunknown_thing: 2\n")
    result = subprocess.run([sys.executable, "-m", "p3s.cli.server", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{path}: unknown key 'unknown_thing'" in result.stderr
    assert "Traceback" not in result.stderr
