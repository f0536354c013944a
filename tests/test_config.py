"""Config: YAML + overrides, validation errors as one clear line."""

import pytest

from codekiln.config import is_override, load_config
from codekiln.errors import UserError


def test_defaults_match_published_recipe():
    c = load_config()
    d = c.data
    assert (d.dedup.threshold, d.dedup.num_perm, d.dedup.ngram) == (0.7, 256, 5)
    assert (d.quality.max_line_length, d.quality.max_avg_line_length, d.quality.min_alnum_fraction) == (1000, 100, 0.25)
    assert "node_modules" in d.walk.skip_dirs and "third_party" in d.walk.skip_dirs


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  dedup:\n    threshold: 0.75\n  pii:\n    kinds: [email]\n")
    c = load_config(f, ["data.dedup.threshold=0.8", "data.quality.enabled=false", "data.language.allow=[Python, Go]"])
    assert c.data.dedup.threshold == 0.8
    assert c.data.quality.enabled is False
    assert c.data.pii.kinds == ["email"]
    assert c.data.language.allow == ["Python", "Go"]


@pytest.mark.parametrize("override, fragment", [
    ("data.dedup.threshold=1.5", "data.dedup.threshold"),
    ("data.dedup.thresold=0.5", "data.dedup.thresold"),
    ("data.workers=-1", "data.workers"),
    ("data.dedup.bands=30", "bands"),
    ("data.pii.kinds=[phone]", "data.pii.kinds"),
])
def test_bad_values_are_user_errors(override, fragment):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(lst)


def test_is_override():
    assert is_override("data.dedup.threshold=0.8")
    assert not is_override("./repos")
    assert not is_override("dir/data.x=1")
    assert not is_override("python-stdlib")
    assert not is_override("other.key=1")


def test_cli_config_show_and_usage_errors(capsys):
    from codekiln.cli import main

    assert main(["config", "show", "data.dedup.threshold=0.85"]) == 0
    assert "threshold: 0.85" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "python-stdlib"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codekiln data build: error:") and "--out" in err and "\n" not in err
