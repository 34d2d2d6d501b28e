from pathlib import Path

import pytest

from geopera.core.yaml_config import ConfigError, apply_override, dump_config, load_config
from geopera.models.pera import PerAConfig, PerASettings
from geopera.pretrain.config import OptimSection, PretrainConfig, load_pretrain_config
from geopera.pretrain.schedules import PerASchedules, ScheduleSettings
from geopera.transforms.views import ViewsConfig
from tests.conftest import REPO


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
    assert load_config(tmp_path / "c.yaml", PretrainConfig) == config
    (tmp_path / "bad.yaml").write_text("model: [1, 2]")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "bad.yaml", PretrainConfig)


def test_sections_are_the_library_dataclasses() -> None:
    """Each default is written once: the config's sections are (or extend) the library's."""
    config = PretrainConfig()
    assert type(config.model) is PerASettings
    assert type(config.views) is ViewsConfig
    assert isinstance(config.optim, ScheduleSettings)
    # the library's defaults are the paper's recipe, and the model config extends the settings
    assert config.model == PerASettings()
    assert PerAConfig().prototypes == config.model.prototypes == 65536
    assert config.views.n_local == ViewsConfig().n_local == 8
    schedules = PerASchedules.of(OptimSection(lr=3e-4, warmup_steps=500), total_steps=100)
    assert (schedules.lr, schedules.warmup_steps, schedules.total_steps) == (3e-4, 100, 100)


def test_tuple_keys_and_frozen_sections_take_overrides() -> None:
    config = PretrainConfig()
    apply_override(config, "views.global_scale=[0.3, 0.9]")
    apply_override(config, "model.prototypes=128")
    assert config.views.global_scale == (0.3, 0.9)
    assert config.model.prototypes == 128
    assert PerASettings().prototypes == 65536  # the library default is untouched


def test_shipped_configs_state_what_they_change() -> None:
    """The CPU default states its small heads, crops and schedule; it is the command default."""
    folder = REPO / "configs" / "pretrain"
    names = sorted(p.name for p in folder.glob("*.yaml"))
    assert names == ["pera_vit_base.yaml", "pera_vit_small.yaml", "pera_vit_tiny_cpu.yaml"]
    for name in names:
        load_pretrain_config(folder / name)  # every key is known
    cpu = load_pretrain_config(folder / "pera_vit_tiny_cpu.yaml")
    assert load_pretrain_config() == cpu
    # 1024 prototypes and 2 local crop pairs: the screen of docs/benchmarks.md, "Quality"
    assert (cpu.model.prototypes, cpu.model.drop_path_rate, cpu.model.head_hidden_dim) == (
        1024,
        0.1,
        1024,
    )
    assert (cpu.views.global_size, cpu.views.local_size, cpu.views.n_local) == (96, 48, 2)
    assert cpu.optim.lr * cpu.data.batch_size / 256 == pytest.approx(1e-4)  # as measured
    assert (cpu.optim.lr, cpu.optim.warmup_steps, cpu.optim.teacher_temp_warmup_steps) == (
        1.6e-3,  # per 256 images (lr_scaling linear): 1e-4 at batch 16, see docs/benchmarks.md
        20,
        30,
    )
    base = load_pretrain_config(folder / "pera_vit_base.yaml")
    assert (base.model.backbone, base.model.prototypes, base.views.n_local) == (
        "vit_base_patch16_224",
        131072,
        8,
    )
