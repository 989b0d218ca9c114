"""Loading a config: YAML in, `extends:` merged, `--set a.b=c` overrides applied, validated into one-line
errors naming the file, line and field; saved with secrets redacted; every field's help for `distill config`.

Relative paths in a config file resolve against that file's folder (as `extends:` does); paths given
with `--set` against the current directory. A bare `--config NAME` names a config shipped in the package.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from distill.config.schema import Config
from distill.config.teacher import TeacherConfig
from distill.io import write_text_atomic, yaml_load

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"  # package data: the wheel ships them
DEFAULT_CONFIG = CONFIGS_DIR / "default.yaml"
M = TypeVar("M", bound=BaseModel)
# Fields holding paths: always anchored to the config's folder / only when the file exists there
# (the others may also be a model id such as HuggingFaceTB/SmolLM2-135M, or a path relative to the cwd).
_PATHS = [("seeds_path",), ("eval", "path")]
_MAYBE_PATHS = [("student", "base"), ("teacher", "adaptation", "base"), ("teacher", "endpoint", "local", "gguf"),
                ("training", "deepspeed")]


class ConfigError(ValueError):
    """A config problem, already phrased as one line naming the file and field."""


def resolve_path(p: str | Path) -> Path:
    """A path as given (config paths are already anchored to their file's folder by load_config)."""
    return Path(p).expanduser()


def find_config(name: str | Path) -> Path:
    """A config file by path, or by the name of one shipped in the package (`sentiment`, `ladder.yaml`)."""
    p = Path(name).expanduser()
    if p.exists() or p.is_absolute() or len(p.parts) > 1:
        return p
    shipped = CONFIGS_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    return shipped if shipped.exists() else p


def _anchor_paths(data: dict, folder: Path) -> None:
    """Rewrite this file's relative paths against its folder, so a config works from any directory."""
    def at(keys):
        cur = data
        for k in keys[:-1]:
            cur = cur.get(k) if isinstance(cur, dict) else None
        return cur if isinstance(cur, dict) and isinstance(cur.get(keys[-1]), str) else None

    if data.get("plugins") and not data.get("plugin_dir"):  # plugins import from this file's folder, for good
        data["plugin_dir"] = str(folder.resolve())
    for keys, always in [*((k, True) for k in _PATHS), *((k, False) for k in _MAYBE_PATHS)]:
        if (parent := at(keys)) is not None:
            p = Path(parent[keys[-1]]).expanduser()
            if not p.is_absolute() and (always or (folder / p).exists()):
                parent[keys[-1]] = str((folder / p).resolve())
    for s in data.get("students") or []:
        if isinstance(s, dict) and isinstance(s.get("base"), str) and (folder / s["base"]).exists():
            s["base"] = str((folder / s["base"]).resolve())
    task = data.get("task")
    if isinstance(task, str) and not Path(task).is_absolute():
        looks_like_path = "/" in task or task.startswith((".", "~"))
        if looks_like_path or (folder / task / "task.yaml").exists():
            data["task"] = str((folder / Path(task).expanduser()).resolve())


def _set_path(data: dict, dotted: str, raw: str, *, source: str) -> None:
    keys = _upgrade_keys(dotted.split("."))
    cur = data
    for k in keys[:-1]:
        if isinstance(cur, list):  # filters.<name>.param: the list entry of that filter
            i = next((i for i, f in enumerate(cur) if f == k or (isinstance(f, dict) and f.get("name") == k)), None)
            if i is None:
                raise ConfigError(f"{source}: --set {dotted}: no entry named '{k}'")
            if isinstance(cur[i], str):
                cur[i] = {"name": k}
            cur = cur[i]
            continue
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"{source}: --set {dotted}: '{k}' is not a section")
        cur = nxt
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {dotted}={raw}: not a valid value ({getattr(e, 'problem', None) or 'invalid YAML'}; "
                          "quote it to pass a string)") from None
    if isinstance(cur.get(keys[-1]), dict) and "method" in cur[keys[-1]] and not isinstance(value, (dict, list)):
        cur[keys[-1]]["method"] = value  # a section with a method takes it as shorthand: teacher.adaptation=lora
    else:
        cur[keys[-1]] = value


def _format_error(err: ValidationError, source: str, text: str | None) -> str:
    e = err.errors()[0]
    field = ".".join(str(x) for x in e["loc"])
    line = ""
    if text is not None and e["loc"]:
        line = _yaml_line(text, [x for x in e["loc"] if isinstance(x, str)])
    msg = e["msg"].replace("Extra inputs are not permitted", "unknown key").removeprefix("Value error, ")
    return f"{source}{line}: field '{field}': {msg}"


def _yaml_line(text: str, keys: list[str]) -> str:
    """Best-effort line number of a nested key in YAML text, for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    found = None
    for k in keys:
        if isinstance(node, yaml.SequenceNode) and k.isdigit() and int(k) < len(node.value):
            found = node = node.value[int(k)]  # a list entry (students.0): its own line
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        for knode, vnode in node.value:
            if knode.value == k:
                found, node = knode, vnode
                break
        else:
            break
    return f":{found.start_mark.line + 1}" if found is not None else ""


def read_yaml(path: Path) -> tuple[str, dict]:
    """A config file's text and its top-level mapping, or a one-line ConfigError naming the file (and line)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: a directory, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    return text, data


def validated(model: type[M], data: dict, overrides: list[str] | None, source: str, text: str) -> tuple[M, dict]:
    """`a.b=c` overrides applied to the file's data, then validated; a failure is one line naming the
    --set it came from, else the file, the line and the field. Returns the model and the fields --set gave."""
    given = {}  # the fields --set gave: a mistake in one is the --set's, not the file's
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set {ov}: expected key.path=value")
        k, v = ov.split("=", 1)
        _set_path(data, k.strip(), v, source="--set")
        given[tuple(_upgrade_keys(k.strip().split(".")))] = ov
    try:
        return model.model_validate(data), given
    except ValidationError as e:
        loc = tuple(str(x) for x in e.errors()[0]["loc"])
        # the --set that gave the field, or a field inside it (a model's validator fails at the model)
        ov = next((o for keys, o in given.items() if loc[:len(keys)] == keys or (loc and keys[:len(loc)] == loc)), None)
        raise ConfigError(_format_error(e, f"--set {ov}", None) if ov else _format_error(e, source, text)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                _chain: tuple[Path, ...] = ()) -> Config:
    """Load YAML, apply `a.b=c` overrides, validate. Raises ConfigError with a one-line message."""
    path = find_config(path) if path else DEFAULT_CONFIG
    source = str(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path.resolve()))
        raise ConfigError(f"{_chain[-1]}: field 'extends': a cycle ({cycle})")
    text, data = read_yaml(path)
    if isinstance(data.get("teacher"), dict):
        data["teacher"] = TeacherConfig.upgrade(data["teacher"])
    _anchor_paths(data, Path(path).resolve().parent)
    if "extends" in data:  # a config that starts from another one (path relative to this file)
        parent = Path(str(data.pop("extends")))
        parent_path = parent if parent.is_absolute() else Path(path).parent / parent
        base = load_config(parent_path, _chain=(*_chain, path.resolve())).model_dump(
            mode="json", exclude={"teacher": {"endpoint": {"api_key"}}})
        data = _deep_merge(base, data)
    cfg, given = validated(Config, data, overrides, source, text)
    cfg._source, cfg._text, cfg._given = source, text, given
    return cfg


def config_error(cfg: Config, keys: list[str], msg: str) -> ConfigError:
    """A one-line error naming the config file, the line of `keys` in it (when found) and the field."""
    given = next((o for k, o in cfg._given.items() if tuple(keys[:len(k)]) == k or k[:len(keys)] == tuple(keys)), None)
    if given:  # the value came from a --set, not from the file
        return ConfigError(f"--set {given}: field '{'.'.join(keys)}': {msg}")
    line = _yaml_line(cfg._text, keys) if cfg._text else ""
    return ConfigError(f"{cfg._source}{line}: field '{'.'.join(keys)}': {msg}")


def _upgrade_keys(keys: list[str]) -> list[str]:
    """--set teacher.base_url=... of earlier versions addresses teacher.endpoint.base_url."""
    if len(keys) >= 2 and keys[0] == "teacher":
        return ["teacher", *TeacherConfig.upgrade_key(keys[1]), *keys[2:]]
    return keys


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Fields that change how a run is carried out, not what it makes: where and how fast requests go, the
# budget (raising it is how a cut-short run goes on), how generation fans out (same rows at any count).
OPERATIONAL = ("teacher.endpoint.", "teacher.budget.", "teacher.batch.", "generation.shards", "generation.task_runner",
               "generation.dask_")


def config_changes(saved: dict, new: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every field that differs between two configs as saved (dotted keys),
    operational fields left out."""
    out = []
    for k in sorted(set(saved) | set(new), key=str):
        a, b, key = saved.get(k), new.get(k), f"{prefix}{k}"
        if key.startswith(OPERATIONAL) or f"{key}.".startswith(OPERATIONAL):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{key}.")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def read_saved_config(path: Path) -> dict:
    return yaml_load(Path(path).read_text(encoding="utf-8")) or {}


def save_config(cfg: Config, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.redacted(), sort_keys=False))


def field_help(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field, for `distill config`."""
    rows = []
    for field_name, f in model.model_fields.items():
        name = f.alias or field_name  # as written in YAML (task.yaml's `schema`)
        ann = f.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        item = typing.get_args(ann)[0] if typing.get_origin(ann) is list and typing.get_args(ann) else None
        if sub is not None:
            rows.append((prefix + name, "", f.description or ""))
            rows.extend(field_help(sub, prefix + name + "."))
        elif isinstance(item, type) and issubclass(item, BaseModel):  # students[].keep_layers, ...
            rows.append((prefix + name, "[]", f.description or ""))
            rows.extend(field_help(item, prefix + name + "[]."))
        elif f.is_required():
            rows.append((prefix + name, "(required)", f.description or ""))
        else:
            default = f.default if f.default_factory is None else f.default_factory()
            rows.append((prefix + name, repr(default) if not isinstance(default, dict) else "{...}", f.description or ""))
    return rows
