"""The model catalog: the shipped Qwen3 family, user overrides, strict validation with lines, model references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qwen_chat.catalog.entries import CatalogError, CatalogModel, find_model, load_catalog, parse_model_ref
from qwen_chat.catalog.loader import load_models
from qwen_chat.system.paths import config_dir

HYBRID_IDS = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b",
              "qwen3-235b-a22b"]
IDS_2507 = [f"qwen3-{size}-{kind}-2507" for size in ("4b", "30b-a3b", "235b-a22b") for kind in ("instruct", "thinking")]

# Parameter counts and f16 KV bytes per token from the reference facts (qwen3-gguf-facts.md, memory-fit.md).
PARAMS = {"qwen3-0.6b": 596_049_920, "qwen3-1.7b": 1_720_574_976, "qwen3-4b": 4_022_468_096,
          "qwen3-8b": 8_190_735_360, "qwen3-14b": 14_768_307_200, "qwen3-32b": 32_762_123_264,
          "qwen3-30b-a3b": 30_532_122_624, "qwen3-235b-a22b": 235_093_634_560}
KV_F16 = {"qwen3-0.6b": 114_688, "qwen3-1.7b": 114_688, "qwen3-4b": 147_456, "qwen3-8b": 147_456,
          "qwen3-14b": 163_840, "qwen3-32b": 262_144, "qwen3-30b-a3b": 98_304, "qwen3-235b-a22b": 192_512}


@pytest.fixture(scope="module")
def models() -> dict[str, CatalogModel]:
    return load_models()


# --- the shipped catalog -----------------------------------------------------------------------------------------


def test_shipped_catalog_validates_and_has_the_whole_family(models: dict[str, CatalogModel]) -> None:
    assert set(HYBRID_IDS + IDS_2507) <= set(models)
    assert all(model.id == model_id for model_id, model in models.items())


def test_presets_still_load_next_to_the_models() -> None:
    assert set(load_catalog()["presets"]) == {"hybrid-thinking", "hybrid-non-thinking", "thinking-2507",
                                              "instruct-2507", "qwen35-thinking", "qwen35-non-thinking"}


def test_every_quant_has_named_files_with_sizes(models: dict[str, CatalogModel]) -> None:
    for model in models.values():
        assert model.quants, model.id
        for name, quant in model.quants.items():
            assert quant.name == name and quant.files and isinstance(quant.estimated, bool)
            for part in quant.files:
                assert part.size > 0 and part.path.endswith(".gguf")
                assert Path(part.path).name.startswith(f"{model.name}-{name}"), part.path
                assert part.sha256 is None  # only sha256 prefixes are known: those are not hashes
            if quant.split:
                assert Path(quant.files[0].path).parent.name == name  # `<QUANT>/` folder, as on the hub
                assert all(part.size <= 50e9 for part in quant.files)  # the hub's per-file limit


def test_sizes_are_plausible_bits_per_weight(models: dict[str, CatalogModel]) -> None:
    for model in models.values():
        for quant in model.quants.values():
            bpw = quant.size * 8 / model.params
            assert 4.4 < bpw < 8.7, (model.id, quant.name, bpw)


def test_exact_sizes_from_the_hub_listing(models: dict[str, CatalogModel]) -> None:
    q8 = models["qwen3-8b"].quants["Q8_0"]
    assert (q8.size, q8.estimated, q8.split) == (8_709_518_112, False, False)
    assert q8.files[0].path == "Qwen3-8B-Q8_0.gguf"
    assert models["qwen3-0.6b"].quants["Q8_0"].size == 639_446_688
    assert models["qwen3-0.6b"].quants.keys() == {"Q8_0"}  # the official small repos have Q8_0 only
    assert models["qwen3-14b"].quants["Q4_K_M"].size == 9_001_752_960
    assert models["qwen3-32b"].quants["Q5_K_M"].size == 23_214_831_232
    assert models["qwen3-4b-instruct-2507"].quants["Q4_K_M"].size == 2_497_281_120
    ud = models["qwen3-30b-a3b-instruct-2507"].quants["UD-Q4_K_XL"]
    assert (ud.size, ud.estimated, ud.files[0].path) == (17_690_497_440, False,
                                                         "Qwen3-30B-A3B-Instruct-2507-UD-Q4_K_XL.gguf")


def test_235b_q4_k_m_is_the_exact_five_part_split(models: dict[str, CatalogModel]) -> None:
    quant = models["qwen3-235b-a22b"].quants["Q4_K_M"]
    assert quant.split and not quant.estimated
    assert quant.size == 142_154_074_176
    paths = [f"Q4_K_M/Qwen3-235B-A22B-Q4_K_M-0000{i}-of-00005.gguf" for i in range(1, 6)]
    assert [f.path for f in quant.files] == paths
    assert [f.size for f in quant.files] == [29_742_283_872, 29_974_106_496, 29_933_980_640, 29_936_094_304,
                                             22_567_608_864]
    assert len(models["qwen3-235b-a22b"].quants["Q8_0"].files) == 9  # the part count ModelScope lists


def test_architecture_matches_the_reference(models: dict[str, CatalogModel]) -> None:
    for model_id, params in PARAMS.items():
        assert models[model_id].params == params
    for model_id, kv in KV_F16.items():
        assert models[model_id].kv_bytes_per_token() == kv, model_id
    assert models["qwen3-8b"].kv_bytes_per_token(34 / 32) == 78_336  # q8_0 cache
    assert models["qwen3-30b-a3b-instruct-2507"].kv_bytes_per_token() == 98_304  # same shapes as the hybrid


def test_moe_fields(models: dict[str, CatalogModel]) -> None:
    for model in models.values():
        assert model.is_moe == (model.experts > 0) == (model.active_params is not None)
    big = models["qwen3-235b-a22b"]
    assert (big.experts, big.experts_used) == (128, 8)
    assert 21e9 < big.active_params < 23e9  # "A22B"
    assert 3e9 < models["qwen3-30b-a3b"].active_params < 3.5e9  # "A3B"
    assert not models["qwen3-32b"].is_moe


def test_hybrid_models_context_and_yarn(models: dict[str, CatalogModel]) -> None:
    for model_id in HYBRID_IDS:
        model = models[model_id]
        assert model.variant == "hybrid" and model.repo == f"Qwen/{model.name}-GGUF"
        assert (model.native_context, model.gguf_context) == (32_768, 40_960)
        small = model_id in ("qwen3-0.6b", "qwen3-1.7b")
        assert model.yarn_factors == (() if small else (2, 4)), model_id


def test_2507_models_are_unsloth_with_256k_native_context(models: dict[str, CatalogModel]) -> None:
    for model_id in IDS_2507:
        model = models[model_id]
        assert model.variant == ("instruct-2507" if "instruct" in model_id else "thinking-2507")
        assert model.repo == f"unsloth/{model.name}-GGUF"
        assert model.native_context == model.gguf_context == 262_144
        assert model.yarn_factors == ()


def test_qwen3_next_keeps_kv_only_in_full_attention_layers(models: dict[str, CatalogModel]) -> None:
    nxt = models["qwen3-next-80b-a3b-thinking"]
    assert nxt.variant == "thinking-2507" and nxt.kv_layers == 12 and nxt.layers == 48
    assert nxt.kv_bytes_per_token() == 2 * 12 * 2 * 256 * 2
    assert all(q.estimated for q in nxt.quants.values())


def test_models_are_frozen(models: dict[str, CatalogModel]) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        models["qwen3-8b"].layers = 1  # type: ignore[misc]


# --- user overrides ----------------------------------------------------------------------------------------------

GOOD = """\
schema: 1
models:
  my-model:
    name: My-Model
    repo: someone/My-Model-GGUF
    variant: hybrid
    params: 1000000
    layers: 2
    hidden: 64
    heads: 4
    kv_heads: 2
    head_dim: 16
    experts: 0
    experts_used: 0
    native_context: 32768
    gguf_context: 40960
    yarn_factors: []
    quants:
      Q8_0:
        estimated: false
        files:
          - {path: My-Model-Q8_0.gguf, size: 1234}
"""

REPLACE_8B = """\
  qwen3-8b:
    name: Qwen3-8B
    repo: me/Qwen3-8B-GGUF
    variant: hybrid
    params: 8190735360
    layers: 36
    hidden: 4096
    heads: 32
    kv_heads: 8
    head_dim: 128
    experts: 0
    experts_used: 0
    native_context: 32768
    gguf_context: 40960
    yarn_factors: [2, 4]
    quants:
      IQ4_XS:
        estimated: true
        files:
          - {path: Qwen3-8B-IQ4_XS.gguf, size: 4500000000, sha256: %s}
""" % ("ab" * 32)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models_catalog.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def test_user_file_adds_and_replaces_models(tmp_path: Path, models: dict[str, CatalogModel]) -> None:
    merged = load_models(user_path=write(tmp_path, GOOD + REPLACE_8B))
    assert set(merged) == set(models) | {"my-model"}
    assert merged["my-model"].quants["Q8_0"].size == 1234
    assert merged["my-model"].active_params is None and merged["my-model"].yarn_factors == ()
    eight = merged["qwen3-8b"]
    assert eight.repo == "me/Qwen3-8B-GGUF" and list(eight.quants) == ["IQ4_XS"]
    assert eight.quants["IQ4_XS"].files[0].sha256 == "ab" * 32
    assert merged["qwen3-14b"] == models["qwen3-14b"]


def test_user_file_in_the_config_folder_is_the_default(models: dict[str, CatalogModel]) -> None:
    assert load_models().keys() == models.keys()  # conftest gives every test an empty config folder
    config_dir().mkdir(parents=True)
    (config_dir() / "models_catalog.yaml").write_text(GOOD, encoding="utf-8")
    assert "my-model" in load_models()


def test_empty_user_file_changes_nothing(tmp_path: Path, models: dict[str, CatalogModel]) -> None:
    assert load_models(user_path=write(tmp_path, "# nothing yet\n")).keys() == models.keys()
    assert load_models(user_path=write(tmp_path, "schema: 1\nmodels:\n#  my-model: ...\n")).keys() == models.keys()


def test_missing_explicit_user_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_models(user_path=tmp_path / "nope.yaml")


BROKEN = [
    # (what, old text, new text, the line's needle, key path, message)
    ("unknown key", "    name: My-Model\n", "    name: My-Model\n    colour: blue\n", "colour:",
     "models.my-model.colour", "unknown key"),
    ("negative size", "size: 1234", "size: -5", "size: -5",
     "models.my-model.quants.Q8_0.files[0].size", "must be a positive integer"),
    ("size as text", "size: 1234", "size: 1.2 GB", "size: 1.2 GB",
     "models.my-model.quants.Q8_0.files[0].size", "must be a positive integer"),
    ("size as bool", "size: 1234", "size: true", "size: true",
     "models.my-model.quants.Q8_0.files[0].size", "must be a positive integer"),
    ("bad variant", "variant: hybrid", "variant: chatty", "variant: chatty",
     "models.my-model.variant", "must be one of hybrid, instruct-2507, thinking-2507"),
    ("parent path", "path: My-Model-Q8_0.gguf", "path: ../My-Model-Q8_0.gguf", "../My-Model",
     "models.my-model.quants.Q8_0.files[0].path", "must not contain '..'"),
    ("absolute path", "path: My-Model-Q8_0.gguf", "path: /etc/My-Model-Q8_0.gguf", "/etc/",
     "models.my-model.quants.Q8_0.files[0].path", "relative path"),
    ("not gguf", "path: My-Model-Q8_0.gguf", "path: My-Model-Q8_0.bin", ".bin",
     "models.my-model.quants.Q8_0.files[0].path", "must end in .gguf"),
    ("sha256 prefix", "size: 1234}", "size: 1234, sha256: 9465e63a}", "9465e63a",
     "models.my-model.quants.Q8_0.files[0].sha256", "64 lowercase hex"),
    ("upper-case sha256", "size: 1234}", f"size: 1234, sha256: {'AB' * 32}}}", "sha256",
     "models.my-model.quants.Q8_0.files[0].sha256", "64 lowercase hex"),
    ("missing key", "    hidden: 64\n", "", "  my-model:", "models.my-model", "missing key 'hidden'"),
    ("moe without active params", "experts: 0\n    experts_used: 0", "experts: 8\n    experts_used: 2", "  my-model:",
     "models.my-model", "active_params"),
    ("experts used without experts", "experts_used: 0", "experts_used: 2", "experts_used: 2",
     "models.my-model.experts_used", "dense"),
    ("yarn factor", "yarn_factors: []", "yarn_factors: [2, 1]", "yarn_factors",
     "models.my-model.yarn_factors[1]", "must be an integer >= 2"),
    ("estimated not bool", "estimated: false", "estimated: maybe", "estimated: maybe",
     "models.my-model.quants.Q8_0.estimated", "true or false"),
    ("empty files", "        files:\n          - {path: My-Model-Q8_0.gguf, size: 1234}\n", "        files: []\n",
     "files: []", "models.my-model.quants.Q8_0.files", "non-empty list"),
    ("upper-case id", "  my-model:", "  My-Model:", "  My-Model:", "models.My-Model", "lowercase"),
    ("bad repo", "repo: someone/My-Model-GGUF", "repo: My-Model-GGUF", "repo: My-Model-GGUF",
     "models.my-model.repo", "Hugging Face repo"),
    ("top-level presets", "schema: 1\n", "schema: 1\npresets: {}\n", "presets:", "presets", "unknown key"),
    ("schema", "schema: 1", "schema: 2", "schema: 2", "schema", "unsupported schema"),
]


@pytest.mark.parametrize(("old", "new", "needle", "where", "message"), [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_broken_user_file_names_file_line_and_key(tmp_path: Path, old: str, new: str, needle: str, where: str,
                                                  message: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new)
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_models(user_path=path)
    assert str(caught.value).startswith(f"{path} line {line_of(text, needle)}: {where}: "), str(caught.value)
    assert message in str(caught.value)


SPLIT = """\
      Q4_K_M:
        estimated: true
        files:
          - {path: Q4_K_M/My-Model-Q4_K_M-00001-of-00003.gguf, size: 10}
          - {path: Q4_K_M/My-Model-Q4_K_M-00002-of-00003.gguf, size: 10}
          - {path: Q4_K_M/My-Model-Q4_K_M-00003-of-00003.gguf, size: 10}
"""


def test_split_quant_parts(tmp_path: Path) -> None:
    quant = load_models(user_path=write(tmp_path, GOOD + SPLIT))["my-model"].quants["Q4_K_M"]
    assert quant.split and quant.size == 30 and len(quant.files) == 3


@pytest.mark.parametrize(("old", "new", "index", "message"), [
    ("00002-of-00003", "00003-of-00003", 1, "part 2 of 3 must end in '-00002-of-00003.gguf'"),
    ("00003-of-00003", "00003-of-00004", 2, "part 3 of 3 must end in '-00003-of-00003.gguf'"),
    ("My-Model-Q4_K_M-00002", "Other-Q4_K_M-00002", 1, "share one name"),
], ids=["out of order", "wrong count", "other stem"])
def test_inconsistent_split_names_are_rejected(tmp_path: Path, old: str, new: str, index: int, message: str) -> None:
    text = GOOD + SPLIT.replace(old, new, 1)
    with pytest.raises(CatalogError) as caught:
        load_models(user_path=write(tmp_path, text))
    error = str(caught.value)
    part_line = len(GOOD.splitlines()) + 4 + index  # SPLIT's parts start on its 4th line
    assert f" line {part_line}: models.my-model.quants.Q4_K_M.files[{index}].path: " in error, error
    assert message in error


def test_single_file_with_a_split_suffix_must_be_part_one_of_one(tmp_path: Path) -> None:
    text = GOOD.replace("My-Model-Q8_0.gguf", "My-Model-Q8_0-00001-of-00002.gguf")
    with pytest.raises(CatalogError, match=r"files\[0\]\.path: part 1 of 1"):
        load_models(user_path=write(tmp_path, text))


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("    heads: 4\n", "    heads: 4: 5\n")
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_models(user_path=path)
    assert str(caught.value).startswith(f"{path} line {line_of(text, 'heads: 4: 5')}: invalid YAML")


def test_unclosed_bracket_is_a_syntax_error(tmp_path: Path) -> None:
    text = GOOD.replace("yarn_factors: []", "yarn_factors: [2, 4")
    with pytest.raises(CatalogError, match=r"models_catalog\.yaml line \d+: invalid YAML"):
        load_models(user_path=write(tmp_path, text))


def test_control_character_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("name: My-Model", "name: My-Model\x07")
    with pytest.raises(CatalogError, match=rf"line {line_of(text, 'name: My')}: invalid YAML: unacceptable character"):
        load_models(user_path=write(tmp_path, text))


def test_duplicate_model_id_is_an_error(tmp_path: Path) -> None:
    text = GOOD + GOOD.split("models:\n", 1)[1]
    with pytest.raises(CatalogError) as caught:
        load_models(user_path=write(tmp_path, text))
    assert f"line {len(GOOD.splitlines()) + 1}: duplicate key 'my-model'" in str(caught.value)


def test_quant_names_differing_only_in_case_are_ambiguous(tmp_path: Path) -> None:
    text = GOOD + SPLIT.replace("Q4_K_M:", "q8_0:").replace("Q4_K_M", "Q8_0")
    with pytest.raises(CatalogError, match=r"models\.my-model\.quants\.q8_0: same name as 'Q8_0'"):
        load_models(user_path=write(tmp_path, text))


# --- references ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "expected"), [
    ("qwen3-8b", ("qwen3-8b", None)),
    ("qwen3-8b:Q5_K_M", ("qwen3-8b", "Q5_K_M")),
    (" Qwen3-8B:q5_k_m ", ("qwen3-8b", "q5_k_m")),
    ("qwen3-235b-a22b-instruct-2507:UD-Q4_K_XL", ("qwen3-235b-a22b-instruct-2507", "UD-Q4_K_XL")),
])
def test_parse_model_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert parse_model_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "  ", ":Q4_K_M", "qwen3-8b:"])
def test_parse_model_ref_rejects_empty_parts(ref: str) -> None:
    with pytest.raises(CatalogError):
        parse_model_ref(ref)


def test_find_model_matches_quants_case_insensitively(models: dict[str, CatalogModel]) -> None:
    model, quant = find_model("qwen3-8b:q5_k_m", models)
    assert model.id == "qwen3-8b" and quant is not None and quant.name == "Q5_K_M"
    assert find_model("Qwen3-8B", models) == (models["qwen3-8b"], None)
    _, ud = find_model("qwen3-30b-a3b-instruct-2507:ud-q4_k_xl", models)
    assert ud is not None and ud.name == "UD-Q4_K_XL"


def test_find_model_suggests_close_ids(models: dict[str, CatalogModel]) -> None:
    with pytest.raises(CatalogError, match=r"unknown model 'qwen3-8bb'; did you mean qwen3-8b, "):
        find_model("qwen3-8bb", models)
    with pytest.raises(CatalogError, match=r"did you mean qwen3-30b-a3b, qwen3-30b-a3b-instruct-2507 or "):
        find_model("qwen3-30b", models)  # names that start with the ref come first
    with pytest.raises(CatalogError, match="available: qwen3-0.6b, "):
        find_model("llama", models)


def test_find_model_suggests_close_quants(models: dict[str, CatalogModel]) -> None:
    with pytest.raises(CatalogError, match=r"qwen3-8b has no quant 'q4km'; did you mean Q4_K_M\b"):
        find_model("qwen3-8b:q4km", models)
    with pytest.raises(CatalogError, match="available: Q8_0$"):
        find_model("qwen3-0.6b:IQ1_S", models)
