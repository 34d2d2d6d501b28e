"""The typed, versioned files between stages: today's formats load, unknown ones are refused."""

import json
from pathlib import Path

import pytest
import torch

from geopera.core.contracts import (
    BackboneCard,
    ContractError,
    EmbeddingRaster,
    EmbeddingSet,
    FinetunedSpec,
    FinetuneOptim,
    Resume,
    RunStatus,
    SkippedRecord,
)
from geopera.core.normalisation import BandStats
from geopera.finetune.checkpoint import build_task, load_finetuned, read_spec
from geopera.finetune.segmentation import ChangeHead

DATA = Path(__file__).parent / "data"


def test_backbone_json_round_trips() -> None:
    raw = json.loads((DATA / "backbone.json").read_text())
    card = BackboneCard.read(DATA / "backbone.json")
    assert card.token_size == raw["token_size"] == 16
    assert card.img_size == 32
    assert card.bands == ["B4", "B3", "B2"]
    assert card.normalisation["mean"] == raw["normalisation"]["mean"]
    assert BackboneCard.from_json(card.to_json()) == card
    assert json.loads(card.to_json())["format_version"] == BackboneCard.FORMAT


def test_a_file_without_format_version_is_refused() -> None:
    raw = json.loads((DATA / "backbone.json").read_text())
    del raw["format_version"]
    with pytest.raises(ContractError, match="has no format_version: it was not written by geopera"):
        BackboneCard.from_dict(raw, "backbone.json")


def test_a_change_detection_spec_rebuilds_a_model(tmp_path: Path) -> None:
    """``spec.json`` is the ``spec`` hyper-parameter of a change-detection ``model.ckpt``."""
    raw = json.loads((DATA / "spec.json").read_text())
    spec = read_spec(raw)
    assert isinstance(spec.head, ChangeHead)  # the change task's own section, typed
    assert spec.head.decoder_channels == raw["head"]["decoder_channels"] == 64
    assert spec.head.class_weights == raw["head"]["class_weights"]
    spec_small = read_spec({**raw, "model_kwargs": {"depth": 1, "embed_dim": 64, "num_heads": 2}})
    task = build_task(spec_small)
    ckpt = {
        "hyper_parameters": {"spec": {**raw, "model_kwargs": spec_small.model_kwargs}},
        "state_dict": task.state_dict(),
    }
    torch.save(ckpt, tmp_path / "model.ckpt")
    loaded = load_finetuned(tmp_path)
    assert loaded.spec == spec_small
    assert loaded.spec.task == "change"
    x = torch.rand(1, 13, 64, 64) * 2000
    with torch.no_grad():
        out = loaded.predict_chips({"image": x, "after": x})
    assert out.shape == (1, 2, 64, 64)
    assert task.hparams["spec"]["format_version"] == FinetunedSpec.FORMAT
    assert read_spec(task.hparams["spec"]) == spec_small


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, r"format_version 99; this geopera reads formats 1 to 3"),
        ({"format_version": "1"}, r"format_version '1'"),
        ({"format_version": 1, "surprise": 1}, r"unknown surprise"),
        ({"format_version": 1, "model": None, "in_chans": None}, None),
    ],
)
def test_unknown_versions_and_fields_are_refused(
    change: dict[str, object], message: str | None
) -> None:
    raw = {**BackboneCard.read(DATA / "backbone.json").to_dict(), **change}
    if message is None:  # drop required fields instead
        raw = {k: v for k, v in raw.items() if v is not None}
        message = r"missing in_chans, model"
    with pytest.raises(ContractError, match=message):
        BackboneCard.from_dict(raw, "x.json")


def test_checkpoint_that_is_not_data_is_refused(tmp_path: Path) -> None:
    """A checkpoint holding a pickled object (not plain data) is refused, and nothing runs."""
    marker = tmp_path / "ran"
    torch.save({"hyper_parameters": {"spec": _Evil(str(marker))}}, tmp_path / "model.ckpt")
    with pytest.raises(ContractError, match="cannot be read as a checkpoint"):
        load_finetuned(tmp_path / "model.ckpt")
    assert not marker.exists()


class _Evil:
    """Unpickling this would create a file (it must never be unpickled by geopera)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.path),))  # type: ignore[return-value]


def test_spec_has_typed_norm_and_optim() -> None:
    raw = json.loads((DATA / "spec.json").read_text())
    spec = read_spec(raw)
    assert isinstance(spec.norm, BandStats)
    assert list(spec.norm.p2) == raw["norm"]["p2"]
    assert spec.optim == FinetuneOptim(**raw["optim"])
    assert spec.optim.max_steps == 300
    assert read_spec(json.loads(spec.to_json())) == spec
    with pytest.raises(ContractError, match="unknown optim surprise"):
        read_spec({**raw, "optim": {**raw["optim"], "surprise": 1}})
    with pytest.raises(ContractError, match="ChangeHead section in x is not valid: unknown depth"):
        read_spec({**raw, "head": {**raw["head"], "depth": 3}}, "x")
    with pytest.raises(ContractError, match="reads formats 3 to 3: write it again"):
        read_spec({**raw, "format_version": 2})


def test_spec_optim_defaults_are_the_configs() -> None:
    from geopera.finetune.config import FinetuneConfig

    assert FinetuneConfig().optim == FinetuneOptim()  # one record, one set of defaults


def test_embeddings_json_round_trips() -> None:
    """``embeddings.json`` as ``geopera embed`` writes it (format 1)."""
    raw = json.loads((DATA / "embeddings.json").read_text())
    manifest = EmbeddingSet.read(DATA / "embeddings.json")
    entry = manifest.rasters[0]
    assert isinstance(entry, EmbeddingRaster)
    assert entry.band_names == raw["rasters"][0]["band_names"] == ["B04", "B03", "B02"]
    assert list(entry.normalisation.std) == raw["rasters"][0]["normalisation"]["std"]
    again = json.loads(manifest.to_json())
    assert again["rasters"] == raw["rasters"]  # the same file, field for field
    assert EmbeddingSet.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("name", ["run_probe.json", "run_resumed.json"])
def test_run_json_round_trips(name: str) -> None:
    """Written by ``geopera pretrain`` (a run with a kNN probe; a killed and resumed run)."""
    raw = json.loads((DATA / name).read_text())
    status = RunStatus.read(DATA / name)
    assert status.status == raw["status"] == "completed"
    assert status.steps == raw["steps"]
    if "probe" in raw:
        assert status.probe is not None
        assert status.last_knn_accuracy == raw["probe"]["knn_accuracy"][-1][1]
    else:
        assert status.resumes == [Resume(step=5, changed={})]
        assert status.signal == 15
    assert RunStatus.from_json(status.to_json()) == status


def test_run_status_updates_keep_the_other_fields(tmp_path: Path) -> None:
    from geopera.pretrain.rundir import RunDir

    run = RunDir(tmp_path)
    assert run.status() is None
    run.update_status(status="running", max_steps=10)
    run.update_status(skipped_steps=SkippedRecord(2, 7, "non-finite loss"))
    status = run.status()
    assert status is not None
    assert (status.status, status.max_steps) == ("running", 10)
    assert status.skipped_steps == SkippedRecord(2, 7, "non-finite loss")
    assert json.loads((tmp_path / "run.json").read_text())["format_version"] == RunStatus.FORMAT
