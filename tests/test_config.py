"""Configs: strict structuring with errors naming the field, and a content hash stable everywhere."""

import json
import subprocess
import sys

import attrs
import expecttest
import pytest

from gbmi_core import ConfigError
from gbmi_core.config import (added_field, canonical_json, content_hash, load_file, parse_assignment, structure,
                              unstructure, with_overrides)


@attrs.frozen
class ExampleConfig:
    V: int = 64
    K: int = 4
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    deterministic: bool = True
    name: str = "max-of-4"


class TestConfigHash(expecttest.TestCase):
    def test_hash_is_pinned(self):
        config = ExampleConfig()
        self.assertExpectedInline(canonical_json(config), """{"fields":{"K":4,"V":64,"betas":[0.9,0.999],"deterministic":true,"lr":0.001,"name":"max-of-4"},"type":"ExampleConfig"}""")
        self.assertExpectedInline(content_hash(config), """717921ecd83098f6""")

    def test_hash_is_the_same_in_another_process(self):
        code = ("import attrs, sys; sys.path.insert(0, %r); from test_config import ExampleConfig; "
                "from gbmi_core.config import content_hash; print(content_hash(ExampleConfig(V=7)))") % __import__("os").path.dirname(__file__)
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        self.assertEqual(other, content_hash(ExampleConfig(V=7)))
        self.assertNotEqual(other, content_hash(ExampleConfig()))


def test_unknown_and_ill_typed_fields_are_named():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) vocab .*known fields: V, K, lr"):
        structure(ExampleConfig, {"vocab": 3})
    with pytest.raises(ConfigError, match=r"expected an integer, got 1.5 @ ExampleConfig.V"):
        structure(ExampleConfig, {"V": 1.5})
    with pytest.raises(ConfigError, match=r"expected true or false, got 'yes' @ ExampleConfig.deterministic"):
        structure(ExampleConfig, {"deterministic": "yes"})
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        structure(ExampleConfig, [1, 2])
    assert structure(ExampleConfig, {"lr": 1}).lr == 1.0  # an integer is a fine float


def test_files_and_overrides(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"V": 8, "K": 3}))
    assert load_file(ExampleConfig, tmp_path / "c.json") == ExampleConfig(V=8, K=3)
    (tmp_path / "c.toml").write_text("V = 8\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown field.*bogus"):
        load_file(ExampleConfig, tmp_path / "c.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid json"):
        load_file(ExampleConfig, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_file(ExampleConfig, tmp_path / "missing.json")
    assert parse_assignment("lr=0.5") == ("lr", 0.5) and parse_assignment("name=abc") == ("name", "abc")
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        parse_assignment("lr")
    assert with_overrides(ExampleConfig(), {"K": 5}).K == 5
    with pytest.raises(ConfigError, match="K"):
        with_overrides(ExampleConfig(), {"K": "five"})


def test_non_finite_numbers_have_no_hash():
    with pytest.raises(ConfigError, match="lr is nan"):
        content_hash(ExampleConfig(lr=float("nan")))


@attrs.frozen
class GrownConfig(ExampleConfig):
    """ExampleConfig after a release: one field added with ``added_field``."""

    recipe: str = added_field("ours")


def test_a_field_added_later_keeps_every_existing_hash_and_stored_form():
    grown, old = GrownConfig(), ExampleConfig()
    fields = json.loads(canonical_json(grown))["fields"]
    assert fields == json.loads(canonical_json(old))["fields"]  # the hashed text differs only in the type's name
    assert unstructure(grown) == unstructure(old)  # and what the store keeps reads as before
    assert structure(GrownConfig, unstructure(old)) == grown
    other = GrownConfig(recipe="theirs")
    assert content_hash(other) != content_hash(grown)
    assert unstructure(other)["recipe"] == "theirs" and structure(GrownConfig, unstructure(other)) == other
    assert with_overrides(grown, {"recipe": "theirs"}) == other
