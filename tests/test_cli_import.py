"""`vitc import` through Typer's CliRunner: happy path, untrusted pickles, mismatches, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vitc
from vitc.checkpoint import read_checkpoint
from vitc.cli.main import app
from vitc.models import create_model

runner = CliRunner()
SMALL = ["--set", "depth=2", "--set", "img_size=64"]


def _official_deit(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("deit_tiny", depth=2, img_size=64).eval()
    path = tmp_path / "deit_official.pth"
    torch.save({"model": model.state_dict(), "epoch": 299}, path)  # the official release wraps under "model"
    return path, model


def test_import_wrapped_deit_gives_identical_logits(tmp_path: Path) -> None:
    source, reference = _official_deit(tmp_path)
    result = runner.invoke(app, ["import", str(source), "--model", "deit_tiny", "--out", str(tmp_path / "out"), *SMALL])
    assert result.exit_code == 0, result.output
    model, meta = read_checkpoint(tmp_path / "out" / "model.safetensors")
    assert meta.provenance["source"] == "deit_official.pth" and len(meta.provenance["source_sha256"]) == 64
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), reference(x))


def test_a_folders_import_records_the_folder_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provenance of `vitc import hf/convit_tiny.fb_in1k` said source = model.safetensors, the name every
    Hugging Face folder's weights have: it names the folder too, relative as given; a file keeps its name."""
    import json

    from safetensors.torch import save_file

    _, reference = _official_deit(tmp_path)
    hub = tmp_path / "hf" / "deit_tiny_patch16_224.fb_in1k"
    hub.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, hub / "model.safetensors")
    (hub / "config.json").write_text(json.dumps({"architecture": "deit_tiny_patch16_224", "num_classes": 1000}))
    monkeypatch.chdir(tmp_path)
    for given, out in (("hf/deit_tiny_patch16_224.fb_in1k", "a"), ("hf/deit_tiny_patch16_224.fb_in1k/", "b")):
        result = runner.invoke(app, ["import", given, "--out", out, *SMALL])
        assert result.exit_code == 0, result.output
        recorded = read_checkpoint(tmp_path / out / "model.safetensors")[1].provenance["source"]
        assert recorded == "hf/deit_tiny_patch16_224.fb_in1k/model.safetensors"


def test_a_downloaded_folder_names_its_model(tmp_path: Path) -> None:
    """A timm hub folder (timm/deit_tiny_patch16_224.fb_in1k: model.safetensors and timm's config.json) and a
    Hugging Face CvT folder say which model they hold, as timm.create_model and from_pretrained read them."""
    import json

    from safetensors.torch import save_file

    from vitc.downloads import model_named_by

    _, reference = _official_deit(tmp_path)
    hub = tmp_path / "deit_tiny_patch16_224.fb_in1k"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, hub / "model.safetensors")
    (hub / "config.json").write_text(json.dumps({"architecture": "deit_tiny_patch16_224", "num_classes": 1000}))
    result = runner.invoke(app, ["import", str(hub), "--out", str(tmp_path / "out"), *SMALL])
    assert result.exit_code == 0, result.output
    assert "model: deit_tiny (named by its config.json)" in result.output
    model, meta = read_checkpoint(tmp_path / "out" / "model.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert meta.model == "deit_tiny" and torch.equal(model(x), reference(x))
    assert model_named_by(hub / "model.safetensors") == "deit_tiny"  # the file in a hub snapshot folder
    loaded = vitc.load_model(hub, depth=2, img_size=64)  # the Python API reads the same config.json
    assert loaded.vitc_name == "deit_tiny" and torch.equal(loaded(x), reference(x))

    hf = tmp_path / "cvt"
    hf.mkdir()
    for depth, widths, name in (([1, 2, 10], [64, 192, 384], "cvt_13"), ([1, 4, 16], [64, 192, 384], "cvt_21"),
                                ([1, 1, 1], [64, 192, 384], None)):  # fmt: skip
        (hf / "config.json").write_text(json.dumps({"model_type": "cvt", "depth": depth, "embed_dim": widths}))
        assert model_named_by(hf) == name
    (hf / "config.json").write_text(json.dumps({"architecture": "resnet50"}))  # timm, not a vitc model
    assert model_named_by(hf) is None
    bare = runner.invoke(app, ["import", str(tmp_path / "deit_official.pth"), "--out", str(tmp_path / "o2")])
    assert bare.exit_code == 2 and "give --model:" in bare.output and "Traceback" not in bare.output


def test_a_vitc_checkpoint_is_said_to_need_no_import(tmp_path: Path) -> None:
    """A vitc checkpoint or run folder is used as it is (it was told to give --model: it has no config.json
    naming a vitc model, though a run folder has its run's config.json)."""
    from vitc.checkpoint import write_checkpoint

    best = write_checkpoint(tmp_path / "run" / "best.safetensors", create_model("deit_micro"))
    for source, model in ((best, []), (best.parent, []), (best, ["--model", "deit_micro"])):
        result = runner.invoke(app, ["import", str(source), *model, "--out", str(tmp_path / "w")])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert f"{best} is already a vitc checkpoint (deit_micro): use it as it is" in result.output
        assert f"vitc export {best}" in result.output and "give --model" not in result.output
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("family", ["convit", "cvt", "spvit"])
def test_weights_of_another_family_say_so(tmp_path: Path, family: str) -> None:
    """ConViT weights given for DeiT said 'cannot adapt these weights to deit_micro (position-embedding
    resampling needs a square token grid, got 63 tokens)'; CvT's, a table of missing keys."""
    source = tmp_path / f"{family}.pth"
    torch.save({"model": create_model(f"{family}_micro").state_dict()}, source)
    result = runner.invoke(app, ["import", str(source), "--model", "deit_micro", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: {source} holds {family} weights (by their tensor names), not deit_micro (deit family): use "
        f"--model with a {family} model (vitc models '{family}*') or weights of the deit family"
    )


def test_import_resamples_position_embeddings(tmp_path: Path) -> None:
    source, _ = _official_deit(tmp_path)
    out = tmp_path / "out96"
    result = runner.invoke(
        app, ["import", str(source), "-m", "deit_tiny", "-o", str(out), "--set", "depth=2", "--img-size", "96"]
    )
    assert result.exit_code == 0, result.output
    model, meta = read_checkpoint(out / "model.safetensors")
    assert meta.args["img_size"] == 96 and model.pos_embed.shape == (1, 1 + 36, 192)


def test_rgb_weights_import_for_one_channel(tmp_path: Path) -> None:
    """`--set in_chans=1`: the patch embedding summed over RGB (timm's adapt_input_conv), said in one line;
    the checkpoint's preprocessing is one channel's, and a grey image gives the RGB model's logits."""
    source, reference = _official_deit(tmp_path)
    out = tmp_path / "grey"
    result = runner.invoke(
        app, ["import", str(source), "-m", "deit_tiny", "-o", str(out), *SMALL, "--set", "in_chans=1"]
    )
    assert result.exit_code == 0, result.output
    assert "deit_official.pth: patch_embed.proj.weight: 3-channel (RGB) weights adapted to in_chans=1" in result.output
    model, meta = read_checkpoint(out / "model.safetensors")
    assert meta.args["in_chans"] == 1 and meta.cfg.input_size == (1, 64, 64)
    assert meta.cfg.mean == (sum(reference.vitc_cfg.mean) / 3,) and len(meta.cfg.std) == 1
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x.expand(-1, 3, -1, -1)), rtol=0, atol=1e-5)


def test_pickle_that_carries_code_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    source = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, source)
    result = runner.invoke(app, ["import", str(source), "-m", "deit_tiny", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "refused" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_mismatched_keys_print_a_table(tmp_path: Path) -> None:
    source, model = _official_deit(tmp_path)
    state = model.state_dict()
    del state["head.bias"]
    state["head.weight"] = torch.zeros(5, 192)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, source)
    result = runner.invoke(app, ["import", str(source), "-m", "deit_tiny", "-o", str(tmp_path / "o"), *SMALL])
    assert result.exit_code == 2
    for text in ("missing", "head.bias", "unexpected", "extra.weight", "wrong shape", "head.weight", "1 missing"):
        assert text in result.output
    assert not (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.parametrize(("content", "message"), [(b"", "empty"), (b"\x80\x02garbage" * 10, "not a readable")])
def test_corrupt_files(tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "bad.pth"
    source.write_bytes(content)
    result = runner.invoke(app, ["import", str(source), "-m", "deit_tiny", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output


def test_truncated_checkpoint(tmp_path: Path) -> None:
    source, _ = _official_deit(tmp_path)
    source.write_bytes(source.read_bytes()[:5000])
    result = runner.invoke(app, ["import", str(source), "-m", "deit_tiny", "-o", str(tmp_path / "o"), *SMALL])
    assert result.exit_code == 2 and "not a readable" in result.output


def test_unknown_model_suggests(tmp_path: Path) -> None:
    source, _ = _official_deit(tmp_path)
    result = runner.invoke(app, ["import", str(source), "-m", "deit_tyni", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "did you mean deit_tiny" in result.output


def test_existing_output_needs_force(tmp_path: Path) -> None:
    source, _ = _official_deit(tmp_path)
    args = ["import", str(source), "-m", "deit_tiny", "-o", str(tmp_path / "o"), *SMALL]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "o" / "model.safetensors").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == before
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_models_table_and_bad_pattern() -> None:
    result = runner.invoke(app, ["models", "deit*"])
    assert result.exit_code == 0 and "5,717,416" in result.output and "deit_micro" in result.output
    bad = runner.invoke(app, ["models", "deit_tyni"])
    assert bad.exit_code == 2 and "did you mean" in bad.output


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "models", "nothing_like_this"])
    assert result.exit_code != 0 and result.exception is not None


def test_import_hugging_face_cvt_safetensors_matches_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = transformers.CvtConfig(depth=[1, 2, 3], embed_dim=[64, 192, 384], num_heads=[1, 3, 6], num_labels=5)
    hf = transformers.CvtForImageClassification(config).eval()
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    for name, prefix in (("with_prefix", ""), ("bare", "cvt.")):
        source = tmp_path / f"{name}.safetensors"
        save_file({k.removeprefix(prefix): v for k, v in state.items()}, str(source))
        args = ["--set", "depths=[1,2,3]", "--set", "num_classes=5", "--set", "act=gelu", "--img-size", "64"]
        result = runner.invoke(app, ["import", str(source), "-m", "cvt_13", "-o", str(tmp_path / name), *args])
        assert result.exit_code == 0, result.output
        model, _ = read_checkpoint(tmp_path / name / "model.safetensors")
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert (model(x) - hf(pixel_values=x).logits).abs().max() < 1e-5


def test_import_official_convit_raw_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = create_model("convit_tiny", depth=2, local_up_to_layer=1, img_size=64).eval()
    state = dict(reference.state_dict())
    state["blocks.0.attn.rel_indices"] = torch.zeros(1, 16, 16, 3)  # old official files may carry the cache
    source = tmp_path / "convit_tiny.pth"
    torch.save(state, source)
    args = ["import", str(source), "-m", "convit_tiny", "-o", str(tmp_path / "o"), "--set", "depth=2"]
    result = runner.invoke(app, [*args, "--set", "local_up_to_layer=1", "--img-size", "64"])
    assert result.exit_code == 0, result.output
    model, _ = read_checkpoint(tmp_path / "o" / "model.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("name", ["deit_tiny", "deit_distilled", "convit_tiny", "spvit_s"])
def test_weights_trained_at_another_size_import_at_that_size(tmp_path: Path, name: str) -> None:
    """Without --img-size, the model takes the size the weights were trained at, read off their position
    embedding's grid (a 384 release was resampled to 224 unsaid), and the logits are the reference's."""
    torch.manual_seed(0)
    model_name = "deit_tiny" if name == "deit_distilled" else name
    local = [] if model_name == "deit_tiny" else ["--set", "local_up_to_layer=1"]
    args = {"depth": 2, **({"local_up_to_layer": 1} if local else {})}
    reference = create_model(model_name, img_size=64, **args).eval()  # a 4×4 grid of 16-pixel patches
    state = dict(reference.state_dict())
    if name == "deit_distilled":  # the official distilled layout: [cls, dist, grid...] and a second head
        pos = state["pos_embed"]
        state["pos_embed"] = torch.cat([pos[:, :1], torch.randn(1, 1, pos.shape[2]), pos[:, 1:]], dim=1)
        state["dist_token"] = torch.randn(1, 1, pos.shape[2])
        state["head_dist.weight"], state["head_dist.bias"] = torch.randn(1000, pos.shape[2]), torch.zeros(1000)
    source = tmp_path / f"{name}.pth"
    torch.save({"model": state}, source)
    result = runner.invoke(
        app, ["import", str(source), "-m", model_name, "-o", str(tmp_path / "o"), "--set", "depth=2", *local]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "img_size=64 (the weights' position embedding is a 4×4 grid of 16-pixel patches" in said
    assert ("a distilled DeiT" in said) == (name == "deit_distilled")
    model, meta = read_checkpoint(tmp_path / "o" / "model.safetensors")
    assert meta.cfg.input_size == (3, 64, 64)
    if name != "deit_distilled":
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))


def test_a_folder_config_names_the_size_cvt_was_trained_at(tmp_path: Path) -> None:
    """CvT has no position embedding: a Hugging Face folder's preprocessor_config.json (microsoft/cvt-13-384
    says shortest_edge 384) or timm's config.json pretrained_cfg gives the size."""
    import json

    from vitc.downloads import image_size_named_by

    folder = tmp_path / "cvt-13-384"
    folder.mkdir()
    assert image_size_named_by(folder) is None
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 384}, "crop_pct": 0.875}))
    assert image_size_named_by(folder / "model.safetensors") == 384
    (folder / "config.json").write_text(json.dumps({"pretrained_cfg": {"input_size": [3, 288, 288]}}))
    assert image_size_named_by(folder) == 288  # timm's record first
    (folder / "config.json").write_text("not json")
    assert image_size_named_by(folder) == 384
