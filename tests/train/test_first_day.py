"""A user's first day with their own photos (issue 24): the data folder names its kind, bad files are
skipped and counted on both data paths, fine-tuning fits its defaults to the data, resumed runs count
their whole time, early stopping, argument errors before torch, and the README's walkthrough as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vitc.cli.main import app
from vitc.errors import VitcError

runner = CliRunner()
ROOT = Path(__file__).parents[2]
TINY_MODEL = [
    "--set",
    'model.args={"depth": 2, "local_up_to_layer": 1}',
    "--set",
    "data.image_size=16",
    "--set",
    "run.amp=off",
]


def _jpeg(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (24, 20), **save: Any) -> Path:
    noise = np.random.default_rng(len(path.name) + sum(rgb)).integers(0, 40, (size[1], size[0], 3))
    Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(path, **save)
    return path


def write_photos(root: Path) -> Path:
    """photos/{train,val}/{cat,dog}: reddish cats, bluish dogs, in every mode a phone or a scanner writes,
    plus a truncated JPEG, a zero-byte "image" and a readme.txt in train/cat."""
    colours = {"cat": (200, 60, 40), "dog": (40, 70, 200)}
    for split, count in (("train", 8), ("val", 3)):
        for name, rgb in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                _jpeg(folder / f"{i}.JPG" if i == 0 else folder / f"{i}.jpg", rgb)
            grey = Image.fromarray(np.full((20, 24), sum(rgb) // 3, np.uint8), mode="L")
            grey.save(folder / "grey.png")
            Image.new("RGBA", (24, 20), (*rgb, 128)).save(folder / "rgba.png")
            Image.new("RGB", (24, 20), rgb).convert("CMYK").save(folder / "cmyk.jpg")
            exif = Image.Exif()
            exif[0x0112] = 6  # rotate 90° clockwise to show
            _jpeg(folder / "rotated.jpeg", rgb, size=(30, 20), exif=exif)
    cat = root / "train" / "cat"
    whole = _jpeg(cat / "whole.jpg", (200, 60, 40), size=(64, 48)).read_bytes()
    (cat / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "readme.txt").write_text("photos of my cat\n")
    return root


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return write_photos(tmp_path / "photos")


def _train(args: list[str], runs: Path, *extra: str) -> Any:
    return runner.invoke(app, ["train", *args, *TINY_MODEL, "--set", f"run.out_dir={runs}", *extra])


# ---------------------------------------------------------------- 1. the data folder names its kind


def test_a_data_dir_without_data_trains_on_that_folder(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is recorded whole, as typed relative to where vitc train ran: the run's eval finds it from
    any folder (it said 'missing folder photos'); a run recorded relative by an older vitc says so."""
    monkeypatch.chdir(tmp_path)
    result = _train(["--data-dir", "photos", "--model", "convit_micro", "--epochs", "1", "-q"], tmp_path / "runs")
    assert result.exit_code == 0, result.output
    config_path = tmp_path / "runs" / "convit_micro" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["data"]["name"] == "imagefolder" and config["data"]["dir"] == str(photos)
    summary = json.loads((tmp_path / "runs" / "convit_micro" / "summary.json").read_text())
    assert summary["data"] == "imagefolder"
    run = tmp_path / "runs" / "convit_micro"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    measured = runner.invoke(app, ["eval", str(run), "--out", str(tmp_path / "cm.png")])
    assert measured.exit_code == 0 and f"14 images in {photos / 'val'}" in measured.output, measured.output
    other = runner.invoke(app, ["eval", str(run), "--data", "cifar10"])
    assert other.exit_code == 2 and "was trained on imagefolder, not cifar10: pass --data-dir" in other.output
    config["data"]["dir"] = "photos"  # as an older vitc recorded it (the checkpoint's copy is what is read)
    config_path.write_text(json.dumps(config))
    from vitc.checkpoint import read_meta, training_data

    meta = read_meta(run / "best.safetensors")
    meta.extra["train_config"]["data"]["dir"] = "photos"
    with pytest.raises(VitcError, match="a folder named relative to where vitc train ran, and there is no photos"):
        training_data(run / "best.safetensors", meta)


def test_a_folder_of_another_kind_or_no_kind_is_one_line(photos: Path, tmp_path: Path) -> None:
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(b"not read: the name says what it is")
    plain = tmp_path / "plain"
    (plain / "cat").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    cases = [
        (["--data-dir", str(plain)], "holds class folders but no train/ and val/"),
        (["--data-dir", str(tmp_path / "empty")], "holds neither class folders"),
        (["--data", "cifar10", "--data-dir", str(photos)], "use --data imagefolder"),
        (["--data", "imagefolder", "--data-dir", str(cifar)], "use --data cifar10"),
        (["--data", "digits", "--data-dir", str(photos)], "digits are bundled"),
    ]
    for args, message in cases:
        result = _train(args, tmp_path / "runs")
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "default:" not in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- 2. bad files: skipped, counted, or named


@pytest.mark.parametrize("stream", ["memory", "stream"])
def test_bad_files_are_skipped_and_counted_on_both_paths(photos: Path, tmp_path: Path, stream: str) -> None:
    runs = tmp_path / "runs"
    result = _train(["--data-dir", str(photos), "--epochs", "2", "-q"], runs, "--set", f"data.stream={stream}")
    assert result.exit_code == 0, result.output
    assert "truncated.jpg" in result.output and "empty.jpg" in result.output and "readme.txt" not in result.output
    assert result.stderr.count("skipped: ") == 2 and "skipped: " not in result.stdout  # once each, on stderr
    rows = [json.loads(line) for line in (runs / "convit_micro" / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_images"] for row in rows] == [2, 2]
    assert all("val_top5" not in row for row in rows)  # 2 classes: 100% by construction (it was recorded)
    assert json.loads((runs / "convit_micro" / "summary.json").read_text())["skipped_images"] == 2
    assert "2 unreadable images skipped" in result.output


def test_export_and_inspect_skip_the_files_training_skipped(photos: Path, tmp_path: Path) -> None:
    """The held-out and calibration sets of an export, and inspect's images, leave out and name the files
    training left out among those they read (they stopped at the first one, pointing to data.on_bad_image,
    which export has not; 30 calibration images and inspect's 64 read every file here); an image folder
    without test/ is measured on val/, and every report says val; a run folder is what inspect and bench
    --ckpt take, as eval and export do."""
    runs, out = tmp_path / "runs", tmp_path / "export"
    (photos / "val" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    assert _train(["--data-dir", str(photos), "--epochs", "1", "-q"], runs).exit_code == 0
    run = runs / "convit_micro"
    result = runner.invoke(app, ["export", str(run), "-p", "int8", "--out", str(out), "--calib-images", "30"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"skipped: cannot read image {photos / 'val' / 'dog' / 'broken.jpg'}" in text
    assert "skipped:" not in result.stdout and "held-out set:" in result.stdout  # warnings on stderr
    assert "held-out set: imagefolder val split, 14 images" in text and "(1 unreadable skipped)" in text
    assert "empty.jpg is empty (0 bytes) (calibration)" in text and "truncated.jpg" in text
    manifest = json.loads((out / "convit_micro" / "manifest.int8.json").read_text())
    assert manifest["drift"]["split"] == "val" and len(manifest["calibration"]["skipped"]) == 2
    onnx = out / "convit_micro" / "model.int8.onnx"
    measured = runner.invoke(app, ["eval", str(onnx), "--out", str(tmp_path / "cm.png")])
    assert measured.exit_code == 0 and "on imagefolder/val, the held-out set of" in " ".join(measured.output.split())
    folder = runner.invoke(app, ["export", str(run), "-p", "int8", "--out", str(out), "--force",
                                 "--calib-dir", str(photos / "train"), "--calib-images", "30"])  # fmt: skip
    assert folder.exit_code == 0 and " ".join(folder.output.split()).count("(calibration)") == 2, folder.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["export", str(run), "-p", "int8", "--out", str(out), "--force",
                                "--calib-dir", str(tmp_path / "empty")])  # fmt: skip
    assert empty.exit_code == 2 and "holds no images" in empty.output and "held-out" not in empty.output  # first
    shown = runner.invoke(app, ["inspect", str(run), "--out", str(tmp_path / "inspect")])  # its 64: all of val
    assert shown.exit_code == 0 and "skipped: cannot read image" in shown.output, shown.output
    timed = runner.invoke(app, ["bench", "--ckpt", str(run), "-n", "2", "--warmup", "1", "-b", "1"])
    assert timed.exit_code == 0, timed.output


@pytest.mark.parametrize("stream", ["memory", "stream"])
def test_stop_names_the_file(photos: Path, tmp_path: Path, stream: str) -> None:
    (photos / "train" / "cat" / "truncated.jpg").unlink()
    sets = ["--set", f"data.stream={stream}", "--set", "data.on_bad_image=stop"]
    result = _train(["--data-dir", str(photos), "--epochs", "1", "-q"], tmp_path / "runs", *sets)
    assert result.exit_code == 2 and "empty.jpg is empty (0 bytes)" in result.output, result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- 4. orientation: inference reads as training


def test_preprocess_turns_photos_upright_as_the_training_loader_does(photos: Path) -> None:
    """A camera's portrait JPEG (stored 30×20, EXIF "rotate 90° clockwise"): vitc.preprocess of the PIL
    image gives exactly the tensor training and `vitc eval` see, which is not the stored pixels'."""
    import torch

    import vitc
    from vitc.data.datasets import load_dataset
    from vitc.data.transforms import eval_transform
    from vitc.models import get_model_cfg

    model = vitc.create_model("deit_micro", img_size=16, num_classes=2)
    cfg = get_model_cfg(model)
    val = load_dataset("imagefolder", "val", data_dir=photos, image_size=16, crop_pct=cfg.crop_pct)
    names = sorted(p.name for p in (photos / "val" / "cat").iterdir())
    loaded = eval_transform(val.images[names.index("rotated.jpeg")][None], cfg.mean, cfg.std)
    with Image.open(photos / "val" / "cat" / "rotated.jpeg") as im:
        assert im.size == (30, 20) and im.getexif()[0x0112] == 6
        upright = vitc.preprocess(im, model)
        stored = vitc.preprocess(Image.fromarray(np.asarray(im)), model)  # the same pixels without the tag
    assert torch.equal(upright, loaded)
    assert not torch.equal(stored, loaded)


# ---------------------------------------------------------------- 7. fine-tuning defaults fit the data


@pytest.fixture
def pretrained(tmp_path: Path) -> Path:
    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.models import create_model

    model = create_model("convit_micro", depth=2, local_up_to_layer=1, img_size=16, num_classes=10)
    return write_checkpoint(
        tmp_path / "w" / "model.safetensors", model, meta_for(model, class_names=list("0123456789"))
    )


def test_fine_tuning_fits_batch_and_lr_to_the_data_and_warns_of_few_steps(
    photos: Path, pretrained: Path, tmp_path: Path
) -> None:
    args = ["--data-dir", str(photos), "--pretrained", str(pretrained), "--epochs", "2"]
    result = _train(args, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "optim.batch_size = 8 (fine-tuning only 25 images)" in out
    assert "optim.lr = 0.00018 (fine-tuning: 0.002 at batch 1024 scaled by sqrt(8/1024)" in out
    assert "optim.layer_decay = 0.75" in out
    assert "warning: this run takes 6 optimiser steps (2 epochs of 3 at batch 8 on 25 images)" in out
    optim = json.loads((tmp_path / "runs" / "convit_micro" / "config.json").read_text())["optim"]
    assert (optim["batch_size"], optim["lr"], optim["layer_decay"], optim["warmup_epochs"]) == (8, 1.8e-04, 0.75, 0)


@pytest.mark.parametrize(
    ("images", "batch", "lr"), [(120, 8, 1.8e-4), (200, 16, 2.5e-4), (400, 32, 3.5e-4), (5000, 64, 5e-4)]
)
def test_fine_tuning_batch_gives_ten_steps_an_epoch(images: int, batch: int, lr: float) -> None:
    """The issue's case: train/finetune_convit_tiny.toml on 120 images took 1 step of 64 an epoch at 1e-4."""
    from vitc.train.config import load_config
    from vitc.train.defaults import resolve_defaults, resolve_for_data

    cfg = load_config(ROOT / "train" / "finetune_convit_tiny.toml", {"data.dir": "x", "model.pretrained": "w"})
    resolve_defaults(cfg)
    _, warnings = resolve_for_data(cfg, images)
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.warmup_epochs) == (batch, lr, 3)
    assert images // batch >= 10 and not warnings  # 30 epochs of >= 10 steps
    scratch = load_config(None, {"optim.epochs": 2})
    resolve_for_data(scratch, images)
    assert (scratch.optim.batch_size, scratch.optim.lr) == (64, 1e-3)  # from scratch: as before


# ---------------------------------------------------------------- 8 and 9: resumed time, early stopping


def test_a_resumed_run_counts_the_time_of_every_session(tiny: dict[str, Any]) -> None:
    """summary.json's seconds cover every session: the resumed run adds its own time to what the resume
    file saved of the earlier ones. The saved time is set to 1000 s, so the check needs no race between
    timers (comparing a session's wall clock with the first session's time failed once in CI)."""
    from safetensors.torch import load_file, save_file

    from vitc._io import read_safetensors_metadata
    from vitc.artifacts.resume import RESUME_KEY

    sets = [a for k, v in {**tiny, "optim.epochs": 1}.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    started = time.perf_counter()
    assert runner.invoke(app, ["train", "-q", *sets]).exit_code == 0
    whole = time.perf_counter() - started
    run = Path(tiny["run.out_dir"]) / "tiny"
    first = json.loads((run / "summary.json").read_text())["seconds"]
    assert 0 < first <= whole  # a fresh run's time is its own
    metadata = read_safetensors_metadata(run / "resume.safetensors")
    record = json.loads(metadata[RESUME_KEY])
    assert 0 < record["state"]["seconds"] <= first  # the first session up to its saved epoch (not its final test)
    record["state"]["seconds"] = 1000.0  # as if the earlier sessions had taken 1000 s
    tensors = load_file(run / "resume.safetensors")
    save_file(tensors, run / "resume.safetensors", metadata={**metadata, RESUME_KEY: json.dumps(record)})
    started = time.perf_counter()
    resume = ["--resume", "--name", "tiny", "--epochs", "2", "--set", f"run.out_dir={tiny['run.out_dir']}"]
    again = runner.invoke(app, ["train", "-q", *resume])
    second = time.perf_counter() - started
    assert again.exit_code == 0, again.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and 1000.0 < summary["seconds"] <= 1000.0 + second


def test_patience_stops_the_run_and_says_so(tiny: dict[str, Any]) -> None:
    """At a learning rate of 1e-12 val top-1 never moves: patience 1 stops after epoch 2 of 6."""
    still = {**tiny, "optim.epochs": 6, "optim.lr": 1e-12, "optim.min_lr": 0.0, "optim.patience": 1}
    sets = [a for k, v in still.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    result = runner.invoke(app, ["train", "-q", *sets])
    assert result.exit_code == 0, result.output
    assert "stopped early after epoch 2 of 6" in " ".join(result.output.split())
    run = Path(tiny["run.out_dir"]) / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[-1]["stopped_early"] is True and "stopped_early" not in rows[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["epochs"] == 2 and summary["patience"] == 1
    resumed = runner.invoke(app, ["train", "-q", "--resume", "--name", "tiny", "--set", f"run.out_dir={run.parent}"])
    assert resumed.exit_code == 0 and len((run / "metrics.jsonl").read_text().splitlines()) == 2  # stays stopped
    # without patience it continues (it trained nothing, rewrote config.json and said 'has not improved
    # for 0 epochs')
    more = ["--resume", "--name", "tiny", "--epochs", "3", "--set", "optim.patience=0"]
    more += ["--set", f"run.out_dir={run.parent}"]
    continued = runner.invoke(app, ["train", "-q", *more])
    assert continued.exit_code == 0 and len((run / "metrics.jsonl").read_text().splitlines()) == 3, continued.output
    assert json.loads((run / "summary.json").read_text())["stopped_early"] is False


def test_augmentation_policies_train(tiny: dict[str, Any]) -> None:
    for extra in (
        {"aug.auto_augment": "rand-m9-mstd0.5-inc1"},  # DeiT's recipe
        {"aug.color_jitter": 0.4},
        {"aug.auto_augment": "trivial"},
    ):
        sets = [a for k, v in {**tiny, "optim.epochs": 1, **extra}.items() for a in ("--set", f"{k}={json.dumps(v)}")]
        result = runner.invoke(app, ["train", "-q", "--force", *sets])
        assert result.exit_code == 0, (extra, result.output)
        config = json.loads((Path(tiny["run.out_dir"]) / "tiny" / "config.json").read_text())
        assert all(config["aug"][k.split(".")[1]] == v for k, v in extra.items())


# ---------------------------------------------------------------- 10. errors before torch; the next command


BEFORE_TORCH = """
import sys, time
from typer.testing import CliRunner
from vitc.cli.main import app
from vitc.errors import VitcError
started = time.perf_counter()
result = CliRunner().invoke(app, ["train", *sys.argv[1:]])
print(result.exit_code, round(time.perf_counter() - started, 2), "torch" in sys.modules, repr(result.output))
"""


def test_argument_errors_come_before_torch_and_before_the_defaults(photos: Path, tmp_path: Path) -> None:
    cases = [
        (["--model", "convit_mikro"], "did you mean convit_micro"),
        (["--set", "optim.lrr=1"], "unknown config key"),
        (["--data-dir", str(tmp_path / "nowhere")], "missing folder"),
        (["--data", "cifar10", "--data-dir", str(photos)], "use --data imagefolder"),
        (["--set", "aug.auto_augment=rand-m99"], "not one vitc knows"),
        (["--pretrained", str(tmp_path / "none.pth")], "no such file or folder"),
    ]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-c", BEFORE_TORCH, *args], capture_output=True, text=True, check=True)
        code, seconds, torch_loaded, output = done.stdout.strip().split(" ", 3)
        assert code == "2" and message in output, (args, done.stdout, done.stderr)
        assert torch_loaded == "False" and "default:" not in output, (args, output)
        assert float(seconds) < 2.0, (args, seconds)
    # the model's own limits need torch, but not the data: an image size off its patch grid stops before
    # the folder is read (it was said after every image was decoded, its unreadable files named first)
    off_grid = _train(["--data-dir", str(photos), "--epochs", "1"], tmp_path / "runs", "--set", "data.image_size=34")
    assert off_grid.exit_code == 2 and "image size 34x34 is not a multiple of the patch size" in off_grid.output
    assert "skipped:" not in off_grid.output, off_grid.output


def test_a_finished_run_says_the_next_command(tiny: dict[str, Any]) -> None:
    """The command to paste, its path quoted: `next: vitc export ../my runs/tiny` was three words to a shell."""
    out_dir = str(Path(tiny["run.out_dir"]) / "my rüns")
    sets = [
        a
        for k, v in {**tiny, "optim.epochs": 1, "run.out_dir": out_dir}.items()
        for a in ("--set", f"{k}={json.dumps(v)}")
    ]
    result = runner.invoke(app, ["train", "-q", *sets])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("next: ")]
    assert shlex.split(line[len("next: ") :]) == [
        "vitc",
        "export",
        f"{out_dir}/tiny",
        "-p",
        "fp32",
        "-p",
        "fp16",
        "-p",
        "int8",
    ]


# ---------------------------------------------------------------- the README's walkthrough, as written


def readme_walkthrough() -> list[str]:
    """The commands of the README's "Your own photos" block (comments and continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Your own photos") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's photo walkthrough has a bash block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_photo_walkthrough_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / "photos")
    commands = readme_walkthrough()
    assert any(c.startswith("vitc train") for c in commands) and any(c.startswith("python") for c in commands)
    speed = [*TINY_MODEL, "--set", "optim.epochs=2"]  # the same commands, a micro model for 2 epochs
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "vitc":
            extra = speed if argv[1] == "train" else []
            result = runner.invoke(app, [*argv[1:], *extra])
            assert result.exit_code == 0, (command, result.output)
            if argv[1] == "predict":  # one line per photo, its classes by name
                assert re.search(r"cat[/\\]\w+\.\w+: (cat|dog) \d+\.\d%, (cat|dog) ", result.output), result.output
        else:  # the Python API line
            argv[0] = sys.executable if argv[0] == "python" else argv[0]
            done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
            assert done.returncode == 0, (command, done.stderr)
            assert re.search(r"\('(cat|dog)', 0\.\d+\)", done.stdout), done.stdout


def test_the_readme_training_script_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's "Training from a script" block, run as written, on a micro recipe under the name it loads."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(from vitc\.train\.config import load_config\n.*?)```", text, re.S)
    assert block, "the README shows training from a script"
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "train" / "deit_micro_digits.toml"
    recipe.parent.mkdir()
    recipe.write_text(
        '[model]\nname = "deit_micro"\nargs = { depth = 1, embed_dim = 32, num_heads = 2 }\n'
        "[data]\nfraction = 0.1\n[optim]\nbatch_size = 32\nwarmup_epochs = 1\n"
        '[aug]\ncrop_scale = [1.0, 1.0]\n[run]\namp = "off"\n'
    )
    exec(compile(block.group(1), "README.md", "exec"), {})  # the README's own code
    run_dir, top1 = capsys.readouterr().out.split()
    assert Path(run_dir) == Path("train/runs/from_script") and 0 <= float(top1) <= 100
    assert (tmp_path / run_dir / "best.safetensors").is_file()
