"""Config files are data: what a file on Hydra's search path may say, checked as Hydra loads it.

emolab's own config (`pkg://conf`) and Hydra's are trusted. A folder the user puts on the search path
(`hydra.searchpath=[file://my_conf]`, `--config-dir`) often holds files from colleagues, so each of its
files is checked before Hydra composes it:

- it lives in a group folder (`scenario/`, `model/`, ...), never at the folder's root, and never in
  `hydra/` or `paths/`: Hydra's own settings and where runs write come from emolab and the command line;
- it writes only its own group: a `# @package` header may not move it elsewhere (an experiment preset,
  which sets keys across groups by design, may write anywhere but the `hydra` and `paths` nodes);
- its defaults list loads only from groups, places nothing into another package, and only a preset
  loads another preset;
- it may name a `_target_` only at the root of a model config, and only a registered provider
  (emotion_probe.models.registry), which `instantiate_backend` checks again before building;
- its values are literal: no `${...}` (a resolver runs code, `oc.env` reads secrets, and a plain
  interpolation copies other nodes, such as a key in a URL, into prompts);
- it is read from inside the folder: a symlink out of it is refused.

Every file, shipped or not, is also loaded only by a plain option name: `scenario=../../x` is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from omegaconf import OmegaConf

from emotion_probe.errors import ConfigError
from emotion_probe.models.registry import check_model_config, nested_targets

#: Sources whose files are emolab's or Hydra's own (package resources, `pkg://`), or Hydra's schemas.
TRUSTED_SOURCES = ("ImportlibResourcesConfigSource", "StructuredConfigSource")
#: An option name: a file name in its group's folder, without folders or dots that climb.
OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
#: Groups a config folder may not provide, and top-level keys an experiment preset may not set: Hydra's own
#: settings (launchers, callbacks, logging, environment) and where runs write.
PROTECTED_GROUPS = ("hydra", "paths")
PROTECTED_KEYS = ("hydra", "paths")
#: Where an experiment preset may place a model config (its `_target_` is checked as a model's).
MODEL_NODES = ("model", "salesperson.model", "customer.model")


def _is_model_group(group: str) -> bool:
    return group == "model" or group.endswith("/model")


def check_config_path(config_path: str) -> None:
    """Refuse a config loaded by a path that climbs out of its group or is absolute (`scenario=../../x`)."""
    parts = config_path.split("/")
    if config_path.startswith("/") or "\\" in config_path or any(part in ("..", ".") for part in parts):
        raise ConfigError(f"{config_path!r}: a config option is a name of a file in its group's folder, "
                          "without '/', '..' or an absolute path")


def _target_group(entry: Any, group: str) -> str:
    """The group a defaults entry of a file in `group` loads from: its own, a subgroup, or an absolute one."""
    raw = getattr(entry, "group", None)
    if raw is None:  # a config entry (`- acorn`, `- /model/scripted`): its group is the path's folder
        raw = (getattr(entry, "path", None) or "").rpartition("/")[0] or ("/" if str(entry.path).startswith("/") else "")
    raw = str(raw)
    if raw.startswith("/"):
        return raw.strip("/")
    return "/".join(part for part in (group, raw) if part)


def check_user_file(source: str, config_path: str, result: Any) -> None:
    """Refuse a file of a user's config folder that writes, builds or reads what it may not (see the module doc)."""
    group = config_path.rpartition("/")[0]
    where = f"{source}/{config_path}.yaml"
    if not group:
        raise ConfigError(f"{where}: a config folder holds files in groups (scenario/, model/, ...); a file at its "
                          "root could write any key, so it is not read")
    if group.split("/")[0] in PROTECTED_GROUPS:
        raise ConfigError(f"{where}: a config folder may not provide {group}/ configs (Hydra's own settings and "
                          "where runs write are set by emolab and the command line)")
    _check_stays_inside(source, config_path, where)
    own_package = group.replace("/", ".")
    preset = group == "experiment"
    package = (result.header or {}).get("package")
    writes_root = preset and package == "_global_"
    if package not in (None, "_group_", own_package) and not writes_root:
        raise ConfigError(f"{where}: '# @package {package}' writes outside its group {group!r}; a file of a config "
                          f"folder may only write its own group (experiment presets: anywhere but {PROTECTED_KEYS})")
    for entry in result.defaults_list or []:
        if getattr(entry, "path", None) == "_self_":
            continue
        target = _target_group(entry, group)
        if not target or target.split("/")[0] in PROTECTED_GROUPS:
            raise ConfigError(f"{where}: its defaults list may not load {target or 'a root'} config "
                              f"({getattr(entry, 'group', None) or entry.path})")
        if target.split("/")[0] == "experiment" and not preset:
            raise ConfigError(f"{where}: only an experiment preset may load another preset ({target})")
        if entry.package not in (None, "", "_here_", "_group_") and not (
                writes_root and not entry.package.startswith(("hydra", "_global_"))):
            raise ConfigError(f"{where}: its defaults list places {target!r} at @{entry.package}, "
                              "outside the file's own group")
    content = OmegaConf.to_container(result.config, resolve=False) if result.config is not None else {}
    if not isinstance(content, dict):
        return
    if writes_root and (protected := sorted(set(content) & set(PROTECTED_KEYS))):
        raise ConfigError(f"{where}: a config folder's preset may not set the {protected[0]} node")
    for path in nested_targets(content):
        node_path = path.removesuffix("._target_") if path != "_target_" else ""
        if _is_model_group(group) and node_path == "":
            check_model_config(content, where)
        elif writes_root and node_path in MODEL_NODES:
            check_model_config(OmegaConf.to_container(OmegaConf.select(result.config, node_path)), f"{where}: {node_path}")
        else:
            raise ConfigError(f"{where}: {path}: only a model config's root may name a _target_ "
                              "(a config file is data; it may not build objects)")
    if "${" in OmegaConf.to_yaml(result.config):
        # A resolver runs code of its own (oc.create builds objects, oc.env reads secrets), and a plain
        # interpolation copies other nodes (a key in a URL) into prompts: values from a shared file are literal.
        raise ConfigError(f"{where}: a config folder's file may not interpolate (${{...}}); write the value itself, "
                          "or pass it on the command line")


def _check_stays_inside(source: str, config_path: str, where: str) -> None:
    """Refuse a file that is a symlink (or inside a linked folder) leading out of its config folder."""
    folder = os.path.realpath(source)
    real = os.path.realpath(os.path.join(source, f"{config_path}.yaml"))
    if os.path.commonpath([folder, real]) != folder:
        raise ConfigError(f"{where}: it links to {real}, outside the config folder {folder}; a config folder's "
                          "files are read only from inside it")


def check_option_overrides(overrides: list[str], groups: set[str]) -> None:
    """Refuse a command-line choice of a config group whose option is not a plain name (`scenario=../x`, `model=/tmp/x`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # Hydra reports a malformed override itself, in its own words
    for override in parsed:
        group = override.key_or_group.lstrip("+~")
        if group not in groups or override.value() is None:
            continue
        options = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        for option in options:
            if not OPTION_NAME.fullmatch(option):
                raise ConfigError(f"{override.input_line}: a config option is a name of a file in conf/{group}/ "
                                  "(no '/', '..' or absolute paths); put your own files in a config folder "
                                  "on hydra.searchpath")


def shipped_groups() -> set[str]:
    """Every config group of the shipped conf/ ("model", "salesperson/model", "hydra/launcher", ...)."""
    from importlib import resources

    groups: set[str] = set()

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith(("_", ".")):
                name = f"{prefix}{entry.name}"
                groups.add(name)
                walk(entry, f"{name}/")

    walk(resources.files("conf"), "")
    return groups | {"hydra/launcher", "hydra/sweeper", "hydra/job_logging", "hydra/hydra_logging", "hydra/callbacks"}


def _file_of(source: Any, config_path: str) -> str:
    folder = getattr(source, "path", None)
    return f"{folder}/{config_path}.yaml" if folder else f"{config_path}.yaml"


def _unreadable(err: Exception) -> str:
    """Why a config file could not be read, in one line (where YAML says where)."""
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"not valid YAML{where}: {problem}"


@contextmanager
def guarded_config_loading() -> Iterator[None]:
    """While Hydra composes, every config file it loads is checked first (see the module doc)."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra.core.object_type import ObjectType

    original = ConfigRepository.load_config

    def load_config(self: ConfigRepository, config_path: str) -> Any:
        check_config_path(config_path)
        source = self._find_object_source(config_path=config_path, object_type=ObjectType.CONFIG)
        try:
            result = original(self, config_path)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{_file_of(source, config_path)}: {_unreadable(err)}") from None
        if result is not None:
            if source is not None and type(source).__name__ not in TRUSTED_SOURCES:
                check_user_file(source.path, config_path, result)
        return result

    ConfigRepository.load_config = load_config
    try:
        yield
    finally:
        ConfigRepository.load_config = original


def check_composed(cfg: Any) -> None:
    """The composed run config, before the task starts: its `task` is registered, and a `_target_`
    appears only at the root of a model node, naming a registered provider (whatever file or override put it there)."""
    from experiments.app.registry import check_task

    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra", None)
    check_task(data.get("task"))
    for path in nested_targets(data):
        node_path = path.removesuffix("._target_")
        if node_path in MODEL_NODES:
            check_model_config(OmegaConf.to_container(OmegaConf.select(cfg, node_path), resolve=False), node_path)
        else:
            raise ConfigError(f"{path}: only a model config's root may name a _target_ "
                              "(a config is data; it may not build objects)")
