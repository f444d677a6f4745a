"""A file from a colleague is data: config folders, job files and checkpoints never run code.

Each test hands `emolab` a crafted file, as a user would receive one, runs the real command, and checks
that it ends with one `error:` line and exit 2, and that what the file asked for did not happen.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from emolab_cli import REPO, emolab, one_error_line


def _emolab(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return emolab(*args, cwd=cwd, env=env)


@pytest.fixture()
def victim(tmp_path: Path) -> tuple[Path, Path]:
    """A file of the user's, and the file a crafted config would copy over it."""
    mine, planted = tmp_path / "mine.txt", tmp_path / "planted.txt"
    mine.write_text("my notes\n")
    planted.write_text("overwritten\n")
    return mine, planted


def _folder(tmp_path: Path, files: dict[str, str]) -> str:
    folder = tmp_path / "shared_conf"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return f"hydra.searchpath=[file://{folder}]"


COPY = "{{_target_: shutil.copyfile, _args_: [{planted}, {mine}]}}"


@pytest.mark.parametrize("text", [
    # The reported hole: a scenario that writes into the global package, reaching the model node.
    "# @package _global_\nscenario:\n  name: x\nmodel:\n  extra: " + COPY + "\n",
    # The same without a header, from inside its own group.
    "name: x\nnotes: " + COPY + "\n",
    # A scenario that pulls a Hydra callback in through its defaults list.
    "# @package _global_\nhydra:\n  callbacks:\n    evil: " + COPY + "\n",
])
def test_a_scenario_file_cannot_build_anything(tmp_path, victim, text):
    mine, planted = victim
    searchpath = _folder(tmp_path, {"scenario/shared.yaml": text.format(planted=planted, mine=mine)})
    error = one_error_line(_emolab(tmp_path, "experiment=negotiation", searchpath, "scenario=shared", "model=scripted",
                                f"hydra.run.dir={tmp_path / 'run'}"))
    assert "shared.yaml" in error
    assert mine.read_text() == "my notes\n"


def test_a_model_file_may_name_only_a_registered_provider(tmp_path, victim):
    mine, planted = victim
    searchpath = _folder(tmp_path, {"model/shared.yaml": f"_target_: shutil.copyfile\nsrc: {planted}\ndst: {mine}\n"})
    error = one_error_line(_emolab(tmp_path, "experiment=probe", searchpath, "model=shared",
                                f"hydra.run.dir={tmp_path / 'run'}"))
    assert "'shutil.copyfile' is not a registered model provider" in error, error
    assert mine.read_text() == "my notes\n"
    # A registered provider with a nested _target_ is refused too (instantiate is recursive).
    searchpath = _folder(tmp_path, {"model/nested.yaml": "defaults:\n  - scripted\n  - _self_\n"
                                                         f"responses: {COPY.format(planted=planted, mine=mine)}\n"})
    error = one_error_line(_emolab(tmp_path, "experiment=probe", searchpath, "model=nested",
                                f"hydra.run.dir={tmp_path / 'run'}"))
    assert "only a model config's root may name a _target_" in error, error
    assert mine.read_text() == "my notes\n"


def test_a_command_line_target_is_checked_as_well(tmp_path, victim):
    mine, planted = victim
    error = _emolab(tmp_path, "experiment=negotiation", "salesperson/model=scripted",
                    "salesperson.model._target_=shutil.copyfile", f"+salesperson.model.src={planted}",
                    f"+salesperson.model.dst={mine}", f"hydra.run.dir={tmp_path / 'run'}")
    assert "is not a registered model provider" in one_error_line(error)
    assert mine.read_text() == "my notes\n"


@pytest.mark.parametrize("option", ["../../outside", "/etc/passwd", "sub/../../x"])
def test_group_options_are_names(tmp_path, option):
    outside = tmp_path / "outside.yaml"
    outside.write_text("name: outside\n")
    error = one_error_line(_emolab(tmp_path / "..", "experiment=preview", f"scenario={option}"))
    assert "a config option is a name of a file" in error, error


@pytest.mark.parametrize("value", [
    "${oc.env:SECRET_KEY}",
    "${oc.${oc.select:nope,env}:SECRET_KEY}",  # a resolver whose name is itself interpolated
    "${hydra:overrides.task}",                  # the command line, keys in URLs included
    "${salesperson.model.base_url}",             # a plain interpolation copies another node into a prompt
])
def test_a_shared_file_cannot_read_the_environment_or_other_nodes(tmp_path, value):
    searchpath = _folder(tmp_path, {"scenario/leaky.yaml": "defaults:\n  - acorn\n  - _self_\n"
                                                            f"customer_persona: {value!r}\n"})
    result = _emolab(tmp_path, "experiment=preview", searchpath, "scenario=leaky", env={"SECRET_KEY": "sk-live-123"})
    assert "may not interpolate" in one_error_line(result)
    assert "sk-live-123" not in result.stdout + result.stderr


def test_a_shared_experiment_preset_may_set_keys_across_groups_but_not_hydra(tmp_path):
    ok = _folder(tmp_path, {"experiment/mine.yaml": "# @package _global_\ndefaults:\n  - preview\n  - _self_\n"
                                                    "scenario:\n  max_turns: 3\n"})
    result = _emolab(tmp_path, "experiment=mine", ok)
    assert result.returncode == 0, result.stderr[-3000:]
    bad = _folder(tmp_path, {"experiment/bad.yaml": "# @package _global_\ndefaults:\n  - preview\n  - _self_\n"
                                                    "hydra:\n  job_logging:\n    root:\n      level: DEBUG\n"})
    assert "may not set the hydra node" in one_error_line(_emolab(tmp_path, "experiment=bad", bad))
    launcher = _folder(tmp_path, {"hydra/launcher/evil.yaml": "_target_: shutil.copyfile\n"})
    assert "may not provide hydra/launcher/ configs" in one_error_line(_emolab(tmp_path, "experiment=preview", launcher,
                                                        "hydra/launcher=evil"))


def test_a_job_file_naming_an_unregistered_task_is_refused_not_imported(tmp_path):
    """The report reads each job's task from its files; `this` prints the Zen of Python when imported."""
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("task: this.run\nseed: 0\n")
    result = _emolab(tmp_path, "experiment=report", f"sweep_dir={tmp_path / 'sweep'}")
    error = one_error_line(result)
    assert "'this.run' is not a registered experiment" in error, error
    assert "Beautiful is better than ugly" not in result.stdout + result.stderr


@pytest.mark.parametrize(("task", "kind"), [("[this.run]", "list"), ("{a: 1}", "dict"), ("7", "int")])
def test_a_job_file_whose_task_is_not_a_name_is_refused(tmp_path, task, kind):
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(f"task: {task}\nseed: 0\n")
    error = one_error_line(emolab("experiment=report", f"sweep_dir={tmp_path / 'sweep'}",
                                  f"hydra.run.dir={tmp_path / 'report'}"))
    assert f"0: task must be the name of a registered experiment (e.g. 'probe'), not a {kind}" \
        in error, error


@pytest.mark.parametrize(("task", "kind"), [("[this.run]", "list"), ("{a: 1}", "dict")])
def test_a_preset_whose_task_is_not_a_name_is_refused(tmp_path, task, kind):
    preset = _folder(tmp_path, {"experiment/odd.yaml": "# @package _global_\ndefaults:\n  - preview\n  - _self_\n"
                                                       f"task: {task}\n"})
    error = one_error_line(emolab("experiment=odd", preset, f"hydra.run.dir={tmp_path / 'run'}"))
    assert error.startswith(f"error: task must be the name of a registered experiment (e.g. "
                            f"'probe'), not a {kind}"), error


def test_only_registered_experiments_run(tmp_path):
    error = one_error_line(_emolab(tmp_path, "experiment=preview", "task=this.run"))
    assert "'this.run' is not a registered experiment" in error


def test_a_provider_registered_by_another_package_is_built(tmp_path):
    """The registry is an entry-point group: a package of the user's adds a provider without touching emolab."""
    site = tmp_path / "site"
    (site / "my_models").mkdir(parents=True)
    (site / "my_models" / "__init__.py").write_text(
        "from emotion_probe.models.providers.scripted import ScriptedBackend\n\n"
        "class Mine(ScriptedBackend):\n    pass\n")
    dist = site / "my_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[emolab.models]\nmine = my_models:Mine\n")
    code = ("from experiments.app.config import load_model\n"
            "m = load_model({'_target_': 'my_models.Mine', 'responses': ['hi']})\n"
            "print(type(m).__name__, m.generate([{'role': 'user', 'content': 'x'}]).text)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "Mine hi"


# --- checkpoints ---------------------------------------------------------------------------------

EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
SALES = json.dumps({"message": "A fine acorn, $7.", "predicted_customer_emotions": EMOTIONS})
CUSTOMER = json.dumps({"message": "Hmm.", "my_emotions": EMOTIONS, "decision": "continue", "price": None})


def _short_script_run(run_dir: Path) -> subprocess.CompletedProcess:
    """A negotiation whose customer's script runs dry in its second turn: it stops with its checkpoint kept."""
    return _emolab(REPO, "experiment=negotiation", "model=scripted", "salesperson/model=scripted",
                   "customer/model=scripted", "probe_messages=false", "cache.enabled=false", "scenario.max_turns=3",
                   "max_parse_retries=0", "progress=false", f"salesperson.model.responses=[{SALES!r},{SALES!r}]",
                   f"customer.model.responses=[{CUSTOMER!r}]", f"hydra.run.dir={run_dir}")


def test_a_crafted_checkpoint_row_is_refused_on_resume_and_runs_nothing(tmp_path):
    import ormsgpack

    run_dir = tmp_path / "run"
    first = _short_script_run(run_dir)
    assert first.returncode == 2, first.stderr[-3000:]
    marker = tmp_path / "pwned"
    # LangGraph's msgpack extension for "call module.name(*args)": os.system("touch <marker>").
    payload = ormsgpack.packb(ormsgpack.Ext(1, ormsgpack.packb(["os", "system", [f"touch {marker}"]])))
    with sqlite3.connect(run_dir / "checkpoints.sqlite") as db:
        thread, namespace, checkpoint = db.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints ORDER BY rowid DESC LIMIT 1").fetchone()
        db.execute("INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (thread, namespace, checkpoint, "planted", 0, "turns", "msgpack", payload))
    error = one_error_line(_short_script_run(run_dir))
    assert "would call os.system" in error and "nothing was run" in error, error
    assert not marker.exists()


def test_a_garbage_checkpoint_file_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    assert _short_script_run(run_dir).returncode == 2
    (run_dir / "checkpoints.sqlite").write_bytes(b"this is no database" * 100)
    error = one_error_line(_short_script_run(run_dir))
    assert "checkpoints.sqlite is not a readable checkpoint database" in error, error


def test_init_conf_never_writes_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "mine" / "scenario").mkdir(parents=True)
    (tmp_path / "mine" / "scenario" / "my_deal.yaml").symlink_to(outside / "planted.yaml")  # dangling
    error = one_error_line(_emolab(tmp_path, "experiment=init_conf", "dir=mine"))
    assert "my_deal.yaml is a symlink" in error, error
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model").symlink_to(outside)
    assert "other/model is a symlink" in one_error_line(_emolab(tmp_path, "experiment=init_conf", "dir=other"))
    assert list(outside.iterdir()) == []


# --- secrets -------------------------------------------------------------------------------------


def test_a_key_written_into_base_url_reaches_no_output(tmp_path):
    """A key pasted into a URL is masked in every file of the run dir and on the console."""
    from loopback import ScriptedServer
    from test_run_faults import Agents

    server = ScriptedServer(Agents())  # answers as both agents, as in the fault tests
    try:
        secret = "sk-very-secret-123"
        url = server.url.replace("http://", f"http://alice:{secret}@")
        roles = [o for role in ("salesperson", "customer") for o in (
            f"{role}/model=openai", f"{role}.model.model={role}", f"{role}.model.base_url={url}",
            f"{role}.model.api_key_env=EMOLAB_UNUSED_KEY", f"{role}.model.timeout=5.0")]
        run_dir = tmp_path / "run"
        result = _emolab(REPO, "experiment=negotiation", "model=scripted", "probe_messages=false", "trials=1",
                         "scenario.max_turns=1", "max_parse_retries=0", "cache.enabled=false", "progress=false",
                         "retry.max_attempts=1", f"hydra.run.dir={run_dir}", *roles, env={"EMOLAB_UNUSED_KEY": "x"})
    finally:
        server.close()
    leaked = [str(path) for path in run_dir.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert result.returncode == 0, result.stderr[-3000:]
    assert leaked == []
    assert secret not in result.stdout + result.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("alice") == 0
    assert "http://***@" in (run_dir / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize("content, reason", [
    (b"name: x\nitem: [unclosed\n", "not valid YAML at line 3, column 1"),
    (b"name: \xff\xfe bad\n", "not UTF-8 text (byte 0xff at offset 6)"),
])
def test_an_unreadable_file_in_a_config_folder_is_one_line(tmp_path, content, reason):
    folder = tmp_path / "mine" / "scenario"
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_bytes(content)
    error = one_error_line(_emolab(tmp_path, "experiment=preview", "hydra.searchpath=[file://mine]", "scenario=broken"))
    assert error == f"error: mine/scenario/broken.yaml: {reason}" or reason in error, error


def test_every_shipped_preset_and_model_config_names_a_registered_entry():
    """The registries and conf/ agree: each shipped task and model _target_ is registered and loads."""
    import yaml

    from emotion_probe.models.registry import registered_providers
    from experiments.app.registry import registered_experiments

    conf = REPO / "conf"
    tasks = {yaml.safe_load(path.read_text())["task"] for path in (conf / "experiment").glob("*.yaml")}
    assert tasks == set(registered_experiments())
    targets = {yaml.safe_load(path.read_text()).get("_target_") for path in (conf / "model").glob("*.yaml")} - {None}
    assert targets <= set(registered_providers())
    assert all(callable(entry.load()) for entry in [*registered_experiments().values(), *registered_providers().values()])


def test_a_resolver_cannot_build_an_object_inside_a_model_config(tmp_path, victim):
    """oc.create makes a node with a _target_ only when resolved: the model is checked, and built, as resolved."""
    mine, planted = victim
    searchpath = _folder(tmp_path, {"model/evil.yaml": "defaults:\n  - scripted\n  - _self_\nresponses: "
                                    f"'${{oc.create:{{_target_:shutil.copyfile,_args_:[{planted},{mine}]}}}}'\n"})
    assert "may not interpolate" in one_error_line(_emolab(tmp_path, "experiment=probe", searchpath, "model=evil",
                                                           f"hydra.run.dir={tmp_path / 'run'}"))
    # The same from the command line (the user's own, so not a file rule): the resolved node is refused.
    error = one_error_line(_emolab(tmp_path, "experiment=probe", "model=scripted", "cache.enabled=false",
                                   f"model.responses='${{oc.create:{{_target_:shutil.copyfile,_args_:[{planted},{mine}]}}}}'",
                                   f"hydra.run.dir={tmp_path / 'run2'}"))
    assert "only a model config's root may name a _target_" in error, error
    assert mine.read_text() == "my notes\n"


LOGGING_PAYLOAD = ("hydra:\n  job_logging:\n    formatters:\n      evil:\n        '()': shutil.copyfile\n"
                   "        src: {planted}\n        dst: {mine}\n")


@pytest.mark.parametrize("files, args", [
    # A primary config of the folder's own, chosen with --config-dir/--config-name.
    ({"evil.yaml": "defaults:\n  - config\n  - _self_\n" + LOGGING_PAYLOAD}, ["--config-name", "evil"]),
    # A preset that pulls a file at the folder's root into the global package.
    ({"experiment/mine.yaml": "# @package _global_\ndefaults:\n  - preview\n  - /evil\n  - _self_\n",
      "evil.yaml": LOGGING_PAYLOAD}, ["experiment=mine"]),
    # A scenario that pulls in a preset, whose _global_ header is absolute.
    ({"scenario/x.yaml": "defaults:\n  - acorn\n  - /experiment/helper\n  - _self_\n",
      "experiment/helper.yaml": "# @package _global_\ndefaults:\n  - /evil\n", "evil.yaml": LOGGING_PAYLOAD},
     ["experiment=preview", "scenario=x"]),
    # A preset that moves where the run writes.
    ({"experiment/elsewhere.yaml": "# @package _global_\ndefaults:\n  - preview\n  - _self_\n"
      "paths:\n  output_dir: {planted_dir}\n"}, ["experiment=elsewhere"]),
])
def test_no_route_reaches_hydra_or_the_output_paths(tmp_path, victim, files, args):
    mine, planted = victim
    folder = tmp_path / "shared_conf"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text.format(planted=planted, mine=mine, planted_dir=tmp_path / "elsewhere"))
    run_dir = tmp_path / "run"
    command = (["--config-dir", str(folder)] if "--config-name" in args else [f"hydra.searchpath=[file://{folder}]"])
    one_error_line(_emolab(tmp_path, *command, *args, f"hydra.run.dir={run_dir}"))
    assert mine.read_text() == "my notes\n"
    assert not (tmp_path / "elsewhere").exists()


def test_a_symlink_out_of_the_config_folder_is_refused(tmp_path):
    secret = tmp_path / "home" / "credentials.yaml"
    secret.parent.mkdir()
    secret.write_text("name: token-SUPERSECRET\n")
    folder = tmp_path / "shared_conf" / "persona"
    folder.mkdir(parents=True)
    (folder / "kube.yaml").symlink_to(secret)
    result = _emolab(tmp_path, "experiment=preview", f"hydra.searchpath=[file://{tmp_path / 'shared_conf'}]",
                     "persona=kube")
    assert "outside the config folder" in one_error_line(result)
    assert "SUPERSECRET" not in result.stdout + result.stderr


def test_a_key_in_a_url_is_masked_in_a_sweeps_records_and_log(tmp_path):
    secret = "sk-sweep-secret-9"
    url = f"http://alice:{secret}@127.0.0.1:9/v1"
    sweep = tmp_path / "sweep"
    result = _emolab(tmp_path, "-m", "experiment=preview", "salesperson/model=openai", "salesperson.model.model=x",
                     f"salesperson.model.base_url={url}", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep / "multirun.yaml").is_file()
    leaked = [str(path) for path in sweep.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert leaked == [] and secret not in result.stdout + result.stderr


def test_redaction_masks_every_spelling_of_a_url_credential():
    from emotion_probe.redaction import redact

    assert redact("https://user:key@host/v1") == "https://***@host/v1"
    assert redact(r"base_url=http\://alice\:sk-1@127.0.0.1\:9/v1") == r"base_url=http\://***@127.0.0.1\:9/v1"
    assert redact("postgresql://u:p@db/x?sslmode=require") == "postgresql://***@db/x?sslmode=require"
    assert redact("http://h/v1?api_key=abc&x=1") == "http://h/v1?api_key=***&x=1"
    assert redact("http://127.0.0.1:8000/v1 and mail a@b.com") == "http://127.0.0.1:8000/v1 and mail a@b.com"
