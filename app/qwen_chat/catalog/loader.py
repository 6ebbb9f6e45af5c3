"""The catalog's `models:` section, read strictly: the shipped file, then the user's override file on top.

Every problem is reported with its file, line and key path, e.g.
`models_catalog.yaml line 42: models.qwen3-8b.quants.Q4_K_M.files[0].size: must be a positive integer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import yaml

from qwen_chat.catalog.entries import QWEN3_VOCAB, CatalogError, CatalogModel, Quant, QuantFile, shipped_file
from qwen_chat.system.paths import config_dir

VARIANTS = ("hybrid", "instruct-2507", "thinking-2507", "qwen35")
SCHEMA = 1
USER_CATALOG = "models_catalog.yaml"

_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")  # no ':' — it separates the quant in `qwen3-8b:Q4_K_M`
_QUANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPLIT_PART = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")
_MODEL_INTS = ("params", "layers", "hidden", "heads", "kv_heads", "head_dim", "native_context", "gguf_context")
_MODEL_REQUIRED = {"name", "repo", "variant", *_MODEL_INTS, "experts", "experts_used", "yarn_factors", "quants"}
_MODEL_OPTIONAL = {"active_params", "kv_layers", "recurrent_state_bytes", "vocab_size"}


def load_models(path: Path | None = None, user_path: Path | None = None) -> dict[str, CatalogModel]:
    """The shipped models, then the user's file on top (same keys; an entry adds a model or replaces one by id).

    Not cached: the user may edit their file while the app runs, and parsing takes milliseconds.
    """
    models = _models_from(path or shipped_file("models_catalog.yaml"), shipped=True)
    if user_path is None:
        default = config_dir() / USER_CATALOG
        user_path = default if default.is_file() else None
    if user_path is not None:
        models.update(_models_from(user_path, shipped=False))
    return models


@dataclass(frozen=True)
class _At:
    """A place in a YAML file (value node, key node, key path) so that every error can name all three."""

    file: Path
    node: yaml.Node
    where: str
    key: yaml.Node | None = None

    def fail(self, message: str) -> NoReturn:
        raise CatalogError(f"{self.file} line {self.node.start_mark.line + 1}: {self.where}: {message}")

    def fail_at_key(self, message: str) -> NoReturn:
        """For problems of a whole entry (a missing key): the line naming the entry, not its first child."""
        node = self.key or self.node
        raise CatalogError(f"{self.file} line {node.start_mark.line + 1}: {self.where}: {message}")

    def item(self, index: int, node: yaml.Node) -> _At:
        return _At(self.file, node, f"{self.where}[{index}]")


def _models_from(path: Path, shipped: bool) -> dict[str, CatalogModel]:
    data, root = _parse(path)
    if root is None:  # an empty user file overrides nothing
        if shipped:
            raise CatalogError(f"{path}: the model catalog is empty")
        return {}
    at = _At(path, root, "(top level)")
    allowed = {"schema", "presets", "models"} if shipped else {"schema", "models"}
    top = _mapping(at, data, required={"schema", "models"} if shipped else set(), optional=allowed)
    if "schema" in top:
        value, place = top["schema"]
        if value != SCHEMA or isinstance(value, bool):
            place.fail(f"unsupported schema {value!r}; this qwen-chat reads schema {SCHEMA}")
    value, place = top.get("models", (None, at))
    if value is None and not shipped:  # `models:` with every entry commented out
        return {}
    return {model_id: _model(model_id, *entry) for model_id, entry in _mapping(place, value).items()}


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    """Compose once (for line numbers) and construct the data from that same node tree."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc}") from exc
    try:
        return _compose_and_construct(path, text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise CatalogError(f"{path}{line}: invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.reader.ReaderError as exc:  # a control character: a position instead of a mark
        row = text.count("\n", 0, exc.position) + 1
        raise CatalogError(f"{path} line {row}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: invalid YAML: {exc}") from exc


def _compose_and_construct(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _reject_duplicate_keys(path, root)  # before construction, which would silently keep the last one
        return loader.construct_document(root), root
    finally:
        loader.dispose()


def _reject_duplicate_keys(path: Path, root: yaml.Node) -> None:
    seen_nodes: set[int] = set()  # aliases can make the tree a graph
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes or isinstance(node, yaml.ScalarNode):
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
            continue
        keys: set[str] = set()
        for key, value in node.value:
            stack.append(value)
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            if key.value in keys:
                raise CatalogError(f"{path} line {key.start_mark.line + 1}: duplicate key {key.value!r}")
            keys.add(key.value)


def _mapping(at: _At, data: Any, required: Iterable[str] = (), optional: Iterable[str] | None = None
             ) -> dict[str, tuple[Any, _At]]:
    """Entries with their places. `optional=None` means any key (ids); otherwise unknown keys are errors."""
    if not isinstance(data, dict) or not isinstance(at.node, yaml.MappingNode):
        at.fail("must be a mapping")
    required = set(required)
    allowed = None if optional is None else required | set(optional)
    # After construction, merge keys are flattened into node.value; the last node per key is the one kept.
    nodes = {k.value: (k, v) for k, v in at.node.value if isinstance(k, yaml.ScalarNode)}
    entries: dict[str, tuple[Any, _At]] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            at.fail(f"key {key!r} must be a string")
        key_node, value_node = nodes.get(key, (at.node, at.node))
        where = key if at.where == "(top level)" else f"{at.where}.{key}"
        place = _At(at.file, value_node, where, key_node)
        if allowed is not None and key not in allowed:
            place.fail_at_key(f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        entries[key] = (value, place)
    missing = sorted(required - entries.keys())
    if missing:
        at.fail_at_key(f"missing key {missing[0]!r}")
    return entries


def _int(value: Any, at: _At, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        at.fail("must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}")
    return value


def _text(value: Any, at: _At, pattern: re.Pattern[str] | None = None, expected: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        at.fail("must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        at.fail(f"{value!r} must be {expected}")
    return value


def _model(model_id: str, data: Any, at: _At) -> CatalogModel:
    if not _MODEL_ID.fullmatch(model_id):
        at.fail_at_key("a model id must be lowercase letters, digits, '.', '_' or '-'")
    entries = _mapping(at, data, _MODEL_REQUIRED, _MODEL_OPTIONAL)
    ints = {key: _int(*entries[key]) for key in _MODEL_INTS}
    experts = _int(*entries["experts"], minimum=0)
    experts_used = _int(*entries["experts_used"], minimum=0)
    _check_experts(experts, experts_used, entries["experts_used"][1])
    if ints["heads"] % ints["kv_heads"]:
        entries["kv_heads"][1].fail("must divide heads")
    variant = entries["variant"][0]
    if variant not in VARIANTS:
        entries["variant"][1].fail(f"{variant!r} must be one of {', '.join(VARIANTS)}")
    return CatalogModel(
        id=model_id,
        name=_text(*entries["name"]),
        repo=_text(*entries["repo"], _REPO, "a Hugging Face repo like Qwen/Qwen3-8B-GGUF"),
        variant=variant,
        active_params=_active_params(entries, experts, ints["params"], at),
        experts=experts,
        experts_used=experts_used,
        yarn_factors=_yarn_factors(*entries["yarn_factors"]),
        quants=_quants(*entries["quants"]),
        kv_layers=_kv_layers(entries, ints["layers"]),
        recurrent_state_bytes=_int(*entries["recurrent_state_bytes"]) if "recurrent_state_bytes" in entries else 0,
        vocab_size=_int(*entries["vocab_size"]) if "vocab_size" in entries else QWEN3_VOCAB,
        **ints,
    )


def _check_experts(experts: int, used: int, at: _At) -> None:
    if (experts == 0) != (used == 0) or used > experts:
        at.fail("must be 0 for a dense model, and between 1 and experts for a mixture-of-experts model")


def _active_params(entries: dict[str, tuple[Any, _At]], experts: int, params: int, at: _At) -> int | None:
    if "active_params" not in entries:
        if experts:
            at.fail_at_key("missing key 'active_params' (required for a mixture-of-experts model)")
        return None
    active = _int(*entries["active_params"])
    if active > params:
        entries["active_params"][1].fail("must not exceed params")
    return active


def _kv_layers(entries: dict[str, tuple[Any, _At]], layers: int) -> int | None:
    if "kv_layers" not in entries:
        return None
    value = _int(*entries["kv_layers"])
    if value > layers:
        entries["kv_layers"][1].fail("must not exceed layers")
    return value


def _yarn_factors(data: Any, at: _At) -> tuple[int, ...]:
    if not isinstance(data, list):
        at.fail("must be a list of integers, e.g. [2, 4] or []")
    pairs = enumerate(zip(data, at.node.value, strict=True))
    return tuple(_int(value, at.item(i, node), minimum=2) for i, (value, node) in pairs)


def _quants(data: Any, at: _At) -> dict[str, Quant]:
    entries = _mapping(at, data)
    if not entries:
        at.fail("must list at least one quant")
    quants: dict[str, Quant] = {}
    seen: dict[str, str] = {}
    for name, (value, place) in entries.items():
        if not _QUANT_NAME.fullmatch(name):
            place.fail_at_key("a quant name must be letters, digits, '_', '.' or '-'")
        if name.upper() in seen:  # refs match quants case-insensitively, so these would be ambiguous
            place.fail_at_key(f"same name as {seen[name.upper()]!r} apart from case")
        seen[name.upper()] = name
        quants[name] = _quant(name, value, place)
    return quants


def _quant(name: str, data: Any, at: _At) -> Quant:
    entries = _mapping(at, data, {"files", "estimated"})
    estimated, estimated_at = entries["estimated"]
    if not isinstance(estimated, bool):
        estimated_at.fail("must be true or false")
    files_data, files_at = entries["files"]
    if not isinstance(files_data, list) or not files_data:
        files_at.fail("must be a non-empty list of {path, size} entries")
    places = [files_at.item(i, node) for i, node in enumerate(files_at.node.value)]
    files = tuple(_quant_file(value, place) for value, place in zip(files_data, places, strict=True))
    _check_split_names(files, places)
    return Quant(name, files, estimated)


def _quant_file(data: Any, at: _At) -> QuantFile:
    entries = _mapping(at, data, {"path", "size"}, {"sha256"})
    path = _text(*entries["path"])
    _check_relative_gguf(path, entries["path"][1])
    sha256 = None
    if "sha256" in entries:
        sha256 = entries["sha256"][0]
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            entries["sha256"][1].fail("must be 64 lowercase hex digits (omit it when the full hash is unknown)")
    return QuantFile(path, _int(*entries["size"]), sha256)


def _check_relative_gguf(path: str, at: _At) -> None:
    """Paths are joined onto the download folder, so they must stay inside it."""
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or "\\" in path or re.match(r"[A-Za-z]:", path):
        at.fail(f"{path!r} must be a relative path inside the repo, with '/' separators")
    if ".." in parts:
        at.fail(f"{path!r} must not contain '..'")
    if not path.endswith(".gguf"):
        at.fail(f"{path!r} must end in .gguf")


def _check_split_names(files: tuple[QuantFile, ...], places: list[_At]) -> None:
    """Parts of a split model are `<stem>-0000i-of-0000N.gguf`, in order, all with the same stem."""
    count = len(files)
    stem = None
    for number, (file, at) in enumerate(zip(files, places, strict=True), start=1):
        match = _SPLIT_PART.fullmatch(PurePosixPath(file.path).name)
        if count == 1 and match is None:
            return
        suffix = f"-{number:05d}-of-{count:05d}.gguf"
        path_at = _At(at.file, at.node, f"{at.where}.path")
        if match is None or not file.path.endswith(suffix):
            path_at.fail(f"part {number} of {count} must end in {suffix!r}")
        file_stem = file.path[: -len(suffix)]
        if stem is not None and file_stem != stem:
            path_at.fail(f"parts must share one name; expected {stem + suffix!r}")
        stem = file_stem
