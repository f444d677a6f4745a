import json

import pytest

from emotion_probe import ConfigError, EmotionWheel
from emotion_probe.data import shipped_names


def test_shaver_has_135_words_in_paper_order(shaver):
    assert len(shaver.words) == 135
    assert shaver.primaries == ["love", "joy", "surprise", "anger", "sadness", "fear"]
    assert shaver.words[:6] == shaver.primaries
    groups = [shaver.primary_of(w) for w in shaver.words[6:]]
    # Secondaries are grouped under their primary, in primary order, with the paper's group sizes.
    sizes = {p: groups.count(p) for p in shaver.primaries}
    assert sizes == {"love": 15, "joy": 32, "surprise": 2, "anger": 28, "sadness": 36, "fear": 16}
    assert groups == sorted(groups, key=shaver.primaries.index)
    assert shaver.words[6] == "adoration" and shaver.words[-1] == "dread"


def test_shaver_secondaries_match_the_paper_reference(shaver):
    from pathlib import Path

    reference = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_persona_confusion.json"
    if not reference.exists():
        pytest.skip("../shared/reference is not beside this checkout")
    assert shaver.words[6:] == json.loads(reference.read_text())["emotions"]


def test_primary_of_and_colours(shaver):
    assert shaver.primary_of("glee") == "joy"
    assert shaver.primary_of("joy") == "joy"
    assert shaver.primary_of("dread") == "fear"
    assert shaver.color_of("glee") == shaver.color_of("joy") != shaver.color_of("dread")
    assert len(set(shaver.group_colors.values())) == 6
    with pytest.raises(ConfigError, match="'elation-ish' is not a word"):
        shaver.primary_of("elation-ish")


@pytest.mark.parametrize("name", ["shaver", "plutchik", "ekman"])
def test_colours_are_stable_across_loads(name):
    """The colours are the file's, not assigned at load time: equal in another process, whose
    string hashing (and so any set or hash-based assignment) differs from this one's."""
    import subprocess
    import sys

    import yaml

    from emotion_probe.data import resolve_data_file

    written = {group["primary"]: group["color"]
               for group in yaml.safe_load(resolve_data_file("wheels", name).read_text())["groups"]}
    assert EmotionWheel.load(name).group_colors == written
    other = subprocess.run(
        [sys.executable, "-c", f"import json; from emotion_probe import EmotionWheel; "
                               f"print(json.dumps(EmotionWheel.load({name!r}).group_colors))"],
        capture_output=True, text=True, check=True, env={**__import__("os").environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(other.stdout) == written


@pytest.mark.parametrize("name,primaries,total", [("plutchik", 8, 24), ("ekman", 6, 6)])
def test_other_bundled_wheels(name, primaries, total):
    wheel = EmotionWheel.load(name)
    assert len(wheel.primaries) == primaries and len(wheel.words) == total
    assert {"plutchik", "ekman", "shaver"} <= set(shipped_names("wheels"))


def test_user_wheel_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "groups": [
        {"primary": "calm", "color": "#00aa00", "words": ["serene"]},
        {"primary": "tense", "color": "#aa0000", "words": []},
    ]}))
    wheel = EmotionWheel.load(path)
    assert wheel.words == ["calm", "tense", "serene"]
    assert wheel.primary_of("serene") == "calm"


@pytest.mark.parametrize(
    "words,message",
    [(["serene", "Serene"], "duplicated emotion word 'Serene'"), (["serene", "  "], "empty emotion word")],
)
def test_bad_wheels_are_rejected_with_the_field(tmp_path, words, message):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"name": "bad", "groups": [{"primary": "calm", "color": "#00aa00", "words": words}]}))
    with pytest.raises(ConfigError, match=message):
        EmotionWheel.load(path)


def test_unknown_wheel_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown wheel 'nope': expected one of \['ekman', 'plutchik', 'shaver'\]"):
        EmotionWheel.load("nope")
    with pytest.raises(ConfigError, match="wheel file not found"):
        EmotionWheel.load("/no/such/wheel.yaml")


def test_non_utf8_wheel_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        EmotionWheel.load(path)


@pytest.mark.parametrize(
    "suffix,text,message",
    [
        (".yaml", "name: bad\ngroups: [\n", r"bad\.yaml is not valid YAML \(line 3, column 1: expected the node content"),
        (".yaml", "name: bad\n  groups: x\n", r"is not valid YAML \(line 2, column 9: mapping values are not allowed here"),
        (".yaml", "name: \x07\n", r"is not valid YAML \(.*special characters are not allowed"),
        (".json", '{"name": ', r"bad\.json is not valid JSON \(line 1, column 10: Expecting value\)"),
        (".json", "[" * 100_000, "nested too deeply"),
        (".yaml", "", "invalid wheel file .*: <root>: Input should be a valid dictionary"),
    ],
)
def test_unparsable_wheel_files_name_the_file_and_the_position(tmp_path, suffix, text, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        EmotionWheel.load(path)


def test_a_wheel_word_with_a_terminal_control_is_refused(tmp_path):
    """Wheel words reach console tables, file names and figures: a received wheel may not smuggle ESC in."""
    import yaml

    from emotion_probe.errors import ConfigError

    path = tmp_path / "wheel.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "groups": [{"primary": "joy\x1b]8;;http://x\x07", "color": "#000000"}]}))
    with pytest.raises(ConfigError, match="holds a control character"):
        EmotionWheel.load(str(path))
