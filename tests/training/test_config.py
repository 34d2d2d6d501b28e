from pathlib import Path

import pytest

from geopera.training.config import (
    ConfigError,
    PretrainConfig,
    apply_override,
    dump_config,
    load_config,
)


def test_overrides_are_parsed_and_typed() -> None:
    config = PretrainConfig()
    for assignment in (
        "trainer.collapse_std=1e9",  # YAML 1.1 reads this as text
        "optim.lr=3",
        "trainer.max_steps=7",
        "trainer.compile=true",
        "data.bands=[B8, B4, B3]",
        "model.backbone_kwargs={depth: 2}",
    ):
        apply_override(config, assignment)
    assert config.trainer.collapse_std == 1e9
    assert isinstance(config.trainer.collapse_std, float)
    assert config.optim.lr == 3.0
    assert config.trainer.max_steps == 7
    assert config.trainer.compile is True
    assert config.data.bands == ["B8", "B4", "B3"]
    assert config.model.backbone_kwargs == {"depth": 2}


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("trainer.max_steps=abc", r"max_steps must be a number \(int\)"),
        ("trainer.max_steps=2.5", "max_steps must be a number"),
        ("trainer.compile=maybe", "must be true or false"),
        ("optim.nope=1", "unknown key optim.nope; keys of 'optim' are: lr"),
        ("nope.lr=1", "unknown config section 'nope'"),
        ("lr=1", "section.key=value"),
    ],
)
def test_bad_overrides(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_override(PretrainConfig(), assignment)


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = PretrainConfig()
    apply_override(config, "views.n_local=6")
    dump_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    (tmp_path / "bad.yaml").write_text("model: [1, 2]")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "bad.yaml")
