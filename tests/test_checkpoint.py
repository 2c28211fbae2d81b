"""vitc's checkpoint format: self-describing, atomic, strict, readable without torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitc.checkpoint import read_checkpoint, read_meta, write_checkpoint
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.models.loading import KeyMismatchError


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=2)
    return write_checkpoint(tmp_path / "run" / "model.safetensors", model)


def test_roundtrip_rebuilds_the_model_with_no_extra_arguments(ckpt: Path) -> None:
    torch.manual_seed(0)
    reference = create_model("deit_micro", depth=2).eval()
    model, meta = read_checkpoint(ckpt)
    assert meta.model == "deit_micro" and meta.args == {"depth": 2}
    assert meta.cfg.input_size == (3, 32, 32) and meta.cfg.mean == (0.5, 0.5, 0.5)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), reference(x))


def test_metadata_reads_without_torch(ckpt: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['torch'] = None\n"
        f"from vitc.checkpoint import read_meta\nprint(read_meta({str(ckpt)!r}).model)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "deit_micro"


def test_no_temporary_files_left_behind(ckpt: Path) -> None:
    assert [p.name for p in ckpt.parent.iterdir()] == ["model.safetensors"]


def test_truncated_file_is_a_clear_error(ckpt: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(VitcError, match="truncated"):
        read_checkpoint(broken)


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, b"not a checkpoint at all, just text"])
def test_garbage_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(VitcError, match="not a safetensors file"):
        read_meta(path)


def test_foreign_safetensors_without_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(VitcError, match="without vitc metadata"):
        read_meta(path)


def test_weights_of_another_shape_are_reported(ckpt: Path, tmp_path: Path) -> None:
    _, meta = read_checkpoint(ckpt)
    from safetensors.torch import save_file

    from vitc.checkpoint import META_KEY

    other = create_model("deit_micro", depth=3, embed_dim=64)
    path = tmp_path / "other.safetensors"  # metadata claims depth=2, width 96 (write_checkpoint refuses to write it)
    save_file(other.state_dict(), str(path), metadata={META_KEY: meta.to_json()})
    with pytest.raises(KeyMismatchError) as info:
        read_checkpoint(path)
    assert info.value.report.wrong_shape and info.value.report.unexpected


FIXTURE = Path(__file__).parent / "fixtures" / "deit_micro_depth1.v0.1.0.safetensors"


def test_a_checkpoint_of_vitc_0_1_0_loads_with_its_cfg_typed() -> None:
    """tests/fixtures: written by vitc 0.1.0's code (commit e955e68, cfg a plain dict) and never rewritten.
    Its cfg reads back as a ModelCfg, the same facts; the model gives the logits it gave then; the
    metadata written back is the record it holds, byte for byte."""
    import json

    from vitc._io import read_safetensors_header
    from vitc.artifacts.model_cfg import ModelCfg
    from vitc.artifacts.preprocess import Preprocess

    model, meta = read_checkpoint(FIXTURE)
    assert isinstance(meta.cfg, ModelCfg)
    assert meta.cfg == ModelCfg(
        family="deit", input_size=(3, 32, 32), num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0
    )
    assert meta.cfg.preprocess == Preprocess((3, 32, 32), 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert meta.class_names == ["cat", "dog", "owl"] and meta.args["embed_dim"] == 16
    assert read_meta(FIXTURE) == meta
    expected = json.loads(FIXTURE.with_name(FIXTURE.stem + ".logits.json").read_text())["logits"]
    with torch.no_grad():
        logits = model(torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))
    assert torch.allclose(logits, torch.tensor(expected), atol=1e-5)
    assert meta.to_json() == read_safetensors_header(FIXTURE)["__metadata__"]["vitc"]


def test_a_cfg_without_input_size_mean_std_is_one_line(tmp_path: Path) -> None:
    import json
    import struct

    data = FIXTURE.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    record = json.loads(header["__metadata__"]["vitc"])
    record["cfg"] = {"family": "deit"}
    header["__metadata__"]["vitc"] = json.dumps(record)
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    with pytest.raises(VitcError, match="the cfg lacks input_size, mean, std"):
        read_meta(bad)


def test_a_checkpoints_preprocessing_wins_over_the_registry_defaults(tmp_path) -> None:
    """Resolved once at load (timm's order: arguments, checkpoint, model defaults): a run whose mean/std
    and crop_pct were not the registry's is evaluated, exported and preprocessed with its own (the
    model's config used to be the registry's, while export read the checkpoint's)."""
    import dataclasses

    import torch

    from vitc.api import preprocess
    from vitc.checkpoint import read_checkpoint, read_meta, write_checkpoint
    from vitc.models import create_model

    model = create_model("deit_micro", depth=1, embed_dim=16, num_heads=2, num_classes=3)
    model.vitc_cfg = dataclasses.replace(model.vitc_cfg, mean=(0.2, 0.3, 0.4), std=(0.9, 0.8, 0.7), crop_pct=0.9)
    path = write_checkpoint(tmp_path / "m.safetensors", model)
    loaded, meta = read_checkpoint(path)
    assert loaded.vitc_cfg.mean == meta.cfg.mean == (0.2, 0.3, 0.4) and loaded.vitc_cfg.crop_pct == 0.9
    assert read_meta(path).cfg.std == loaded.vitc_cfg.std == (0.9, 0.8, 0.7)
    import numpy as np

    white = preprocess(np.full((32, 32, 3), 255, dtype=np.uint8), loaded)[0, :, 0, 0]
    assert torch.allclose(white, torch.tensor([(1 - 0.2) / 0.9, (1 - 0.3) / 0.8, (1 - 0.4) / 0.7]))
    again, _ = read_checkpoint(path, drop_path_rate=0.1)  # an argument that is not preprocessing changes none of it
    assert again.vitc_cfg == loaded.vitc_cfg


def test_cvt_w24_squashes_as_released_and_its_checkpoints_of_an_older_vitc_still_centre_crop(tmp_path: Path) -> None:
    """CvT-W24 is released only at 384, squashed (CENTER_CROP: False): registered so, a new checkpoint records
    it (version 2). One an older vitc wrote, without crop_mode, reads as it did: centre-cropped."""
    import json

    from safetensors.torch import save_file

    from vitc._io import read_safetensors_header
    from vitc.checkpoint import load_state_dict

    with torch.device("meta"):
        assert create_model("cvt_w24").pretrained_cfg["crop_mode"] == "squash"
    model = create_model("cvt_w24", embed_dims=(8, 16, 32), depths=(1, 1, 1), num_heads=(1, 1, 1), img_size=32)
    path = write_checkpoint(tmp_path / "w24.safetensors", model)
    record = json.loads(read_safetensors_header(path)["__metadata__"]["vitc"])
    assert record["version"] == 2 and record["cfg"]["crop_mode"] == "squash" and record["cfg"]["crop_pct"] == 1.0
    assert read_checkpoint(path)[0].vitc_cfg.preprocess.crop_mode == "squash"
    del record["cfg"]["crop_mode"]
    older = tmp_path / "older.safetensors"
    save_file(load_state_dict(path), str(older), metadata={"vitc": json.dumps({**record, "version": 1})})
    loaded, meta = read_checkpoint(older)
    assert meta.cfg.crop_mode == loaded.vitc_cfg.crop_mode == loaded.pretrained_cfg["crop_mode"] == "center"


@pytest.mark.parametrize("wrap", ["compile", "data_parallel", "both"])
def test_a_wrapped_model_is_saved_as_the_model_inside(tmp_path: Path, wrap: str) -> None:
    """save_checkpoint(path, torch.compile(model)), as timm's --torchcompile trains, wrote `_orig_mod.`-prefixed
    keys that no model fits (DDP's `.module.` likewise, and DDP has no vitc record at all)."""
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1).eval()
    wrapped: torch.nn.Module = model
    if wrap in ("data_parallel", "both"):
        wrapped = torch.nn.DataParallel(wrapped)
    if wrap in ("compile", "both"):
        wrapped = torch.compile(wrapped)  # never run: only the wrapper matters
    loaded, meta = read_checkpoint(write_checkpoint(tmp_path / "model.safetensors", wrapped))
    assert meta.model == "deit_micro" and meta.args == {"depth": 1}
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


def test_a_loaded_checkpoint_saved_again_keeps_its_class_names(tmp_path: Path) -> None:
    """vitc.load_model then write_checkpoint (after fine-tuning in one's own loop) dropped the class names: the
    file's predictions were named by index. A head reset to another count names none (the old names are stale)."""
    import vitc
    from vitc.checkpoint import meta_for

    model = create_model("deit_micro", depth=1, num_classes=3)
    write_checkpoint(tmp_path / "a.safetensors", model, meta_for(model, class_names=["cat", "dog", "zebra"]))
    loaded = vitc.load_model(tmp_path / "a.safetensors")
    assert read_meta(write_checkpoint(tmp_path / "b.safetensors", loaded)).class_names == ["cat", "dog", "zebra"]
    loaded.vitc_class_names = ["cat", "dog"]  # names a head of another size cannot be the head's
    assert read_meta(write_checkpoint(tmp_path / "c.safetensors", loaded)).class_names is None
    loaded = vitc.load_model(tmp_path / "a.safetensors")
    loaded.reset_classifier(4)
    assert read_meta(write_checkpoint(tmp_path / "d.safetensors", loaded)).class_names is None
    renamed = meta_for(vitc.load_model(tmp_path / "a.safetensors"), class_names=["a", "b", "c"])
    assert renamed.class_names == ["a", "b", "c"]  # names given win over the model's


SMALL = {name: {"depth": 2, "local_up_to_layer": 1} for name in ("convit_micro", "spvit_micro")} | {
    "deit_micro": {"depth": 1}
}


def test_a_model_that_its_own_description_cannot_rebuild_is_not_saved(tmp_path: Path) -> None:
    """save_checkpoint(compile_model(m)) wrote a file that every reader refused (ConViT: 20 missing, 22
    unexpected keys) and `vitc info` called an ordinary checkpoint; a model with a module added likewise."""
    from vitc.compile import compile_model

    for name in ("convit_micro", "cvt_micro"):
        compiled, _ = compile_model(create_model(name, **SMALL.get(name, {})))
        with pytest.raises(
            VitcError, match=r"not saved: this model was rewritten by vitc.compile.compile_model \(for cpu"
        ):
            write_checkpoint(tmp_path / f"{name}.safetensors", compiled)
    model = create_model("deit_micro", depth=1)
    model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(
        VitcError, match=r"x.safetensors: not saved: the model does not fit deit_micro: 0 missing, 2 unexp"
    ):
        write_checkpoint(tmp_path / "x.safetensors", model)
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(VitcError, match=r"compile_model takes a model \(.*\), not str 'convit_micro'"):
        compile_model("convit_micro")


@pytest.mark.parametrize("name", ["deit_micro", "convit_micro", "spvit_micro", "cvt_micro"])
def test_a_checkpoint_loads_at_another_input_size(tmp_path: Path, name: str) -> None:
    """load_model(ckpt, img_size=48) failed on the position embedding's shape (1 wrongly shaped key), though foreign
    weights and `--pretrained` resample it: now resampled as timm's pretrained loading does (CvT has none)."""
    import vitc
    from vitc.models.layers import resample_pos_embed

    torch.manual_seed(0)
    model = create_model(name, **SMALL.get(name, {}))
    path = write_checkpoint(tmp_path / "m.safetensors", model)
    for loaded in (read_checkpoint(path, img_size=48)[0], vitc.load_model(path, img_size=48)):
        assert loaded.pretrained_cfg["input_size"] == (3, 48, 48) and loaded(torch.randn(1, 3, 48, 48)).shape == (1, 10)
        if name != "cvt_micro":
            prefix = int(name == "deit_micro")  # DeiT's class token has a position; ConViT's and SP-ViT's none
            timms = name != "spvit_micro"  # SP-ViT's release resizes without antialias (tests/models/test_spvit.py)
            assert torch.equal(loaded.pos_embed, resample_pos_embed(model.pos_embed, (12, 12), prefix, antialias=timms))
    with pytest.raises(
        VitcError, match=r"has a head of 10 classes, not 5: load it as it is, then model.reset_classifier\(5\)"
    ):
        read_checkpoint(path, num_classes=5)  # before: "does not fit: 0 missing, 0 unexpected, 2 wrongly shaped keys"


def test_a_resume_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    """resume.safetensors given as weights: `vitc eval`, `export` and `compile` said "use `vitc import` to convert
    it", vitc.load_model "name it, e.g. vitc.load_model(path, 'convit_tiny')", which then failed on 402 keys."""
    import numpy as np
    from safetensors.numpy import save_file

    import vitc
    from vitc.artifacts.resume import RESUME_KEY

    state = tmp_path / "resume.safetensors"
    save_file({"x": np.zeros(1, dtype=np.float32)}, str(state), metadata={RESUME_KEY: "{}"})
    said = "resume.safetensors is a run's resume state .* load best.safetensors or last.safetensors beside it"
    for load in (read_meta, read_checkpoint, vitc.load_model, lambda p: vitc.load_model(p, "deit_micro")):
        with pytest.raises(VitcError, match=said):
            load(state)


def test_a_head_replaced_by_hand_is_refused_with_the_call_that_records_it(tmp_path: Path) -> None:
    """model.head = nn.Linear(…, 4): the refusal named 2 wrongly shaped keys and no way out."""
    model = create_model("deit_micro", depth=1)
    model.head = torch.nn.Linear(model.num_features, 4)
    with pytest.raises(VitcError, match=r"2 wrongly shaped keys: a head replaced by hand .*reset_classifier\(4\)"):
        write_checkpoint(tmp_path / "swap.safetensors", model)
    model.reset_classifier(4)
    assert read_checkpoint(write_checkpoint(tmp_path / "reset.safetensors", model))[1].cfg.num_classes == 4


def test_an_export_folder_given_as_a_checkpoint_names_what_to_give(tmp_path: Path) -> None:
    """`vitc export`, `compile` and export_checkpoint on an export folder said "a folder without best.safetensors"."""
    from vitc.checkpoint import resolve_checkpoint

    (tmp_path / "manifest.fp32.json").write_text("{}")
    with pytest.raises(VitcError, match="is an export folder, not a vitc checkpoint: name the checkpoint or run"):
        resolve_checkpoint(tmp_path)


def test_class_names_of_another_count_than_the_head_are_neither_saved_nor_loaded(tmp_path: Path) -> None:
    """One rule, where the checkpoint is written and where it is read: names are as many as the head's rows."""
    from safetensors.torch import save_file

    from vitc.checkpoint import META_KEY, meta_for

    model = create_model("deit_micro", depth=1)
    meta = meta_for(model, class_names=["cat", "dog", "fox"])
    with pytest.raises(VitcError, match=r"a.safetensors: not saved: 3 class names for a head of 10 outputs$"):
        write_checkpoint(tmp_path / "a.safetensors", model, meta)
    save_file(model.state_dict(), str(tmp_path / "b.safetensors"), metadata={META_KEY: meta.to_json()})  # by hand
    with pytest.raises(VitcError, match=r"b.safetensors: its metadata has 3 class names for a head of 10 outputs$"):
        read_checkpoint(tmp_path / "b.safetensors")
