"""The hostile-input campaign: every command against crafted files, paths and option values.

Each case must end with exit code 2 and one line `error: ...` (no traceback), within a memory bound
(the address space is capped a few GB above what the process already uses, so an allocation sized
by a file's claim fails the case) and a time bound, and without changing any file outside the
case's own output folder. Categories and counts are in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.reliability import hostile
from vitc.cli.main import app

pytest.importorskip("onnx")
runner = CliRunner()
MEMORY_HEADROOM = 3 << 30  # bytes of address space a case may add
SECONDS = 60


@contextmanager
def bounded(seconds: int = SECONDS) -> Iterator[None]:
    """Cap the address space a few GB above the current size and the time at `seconds`."""
    page = os.sysconf("SC_PAGE_SIZE")
    current = int(Path("/proc/self/statm").read_text().split()[0]) * page
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (current + MEMORY_HEADROOM, hard))

    def timeout(*_: Any) -> None:
        raise TimeoutError(f"the case ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, exports: dict[str, Any]) -> dict[str, Path]:
    """The hostile files, plus a folder of the user's own files that no case may touch."""
    from onnx import TensorProto, helper

    root = tmp_path_factory.mktemp("campaign")
    h = hostile
    good = h.good_checkpoint(root)
    w: dict[str, Path] = {"root": root, "good": good}
    user = root / "user_files"
    (user / "photos" / "cat").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    h.image_folder(user / "photos_set")
    w["user"] = user

    # checkpoints: absurd or ill-typed constructor arguments and configs in valid files
    w["ckpt_huge_dim"] = h.rewrite_meta(good, root / "huge_dim.safetensors", **{"args.embed_dim": 300_000_000})
    w["ckpt_deep"] = h.rewrite_meta(good, root / "deep.safetensors", **{"args.depth": 10**9})
    w["ckpt_str_arg"] = h.rewrite_meta(good, root / "str_arg.safetensors", **{"args.depth": "two"})
    w["ckpt_neg_arg"] = h.rewrite_meta(good, root / "neg_arg.safetensors", **{"args.num_heads": -2})
    w["ckpt_float_arg"] = h.rewrite_meta(good, root / "float_arg.safetensors", **{"args.depth": 1.5})
    w["ckpt_input_4096"] = h.rewrite_meta(good, root / "input_4096.safetensors", **{"cfg.input_size": [3, 4096, 4096]})
    w["ckpt_input_bad"] = h.rewrite_meta(good, root / "input_bad.safetensors", **{"cfg.input_size": "big"})
    w["ckpt_mean_nan"] = h.rewrite_meta(good, root / "mean_nan.safetensors", **{"cfg.mean": [float("nan")] * 3})
    w["ckpt_data_dir"] = h.rewrite_meta(
        good, root / "data_dir.safetensors",
        **{"extra.train_config": {"data": {"name": "imagefolder", "dir": str(user / "photos_set")}}},
    )  # fmt: skip
    w["ckpt_deep_json"] = h.rewrite_header(
        good, root / "deep_json.safetensors", lambda hd: hd["__metadata__"].update(vitc=h.deep_json())
    )
    w["ckpt_meta_list"] = h.rewrite_header(good, root / "meta_list.safetensors", lambda hd: hd.update(__metadata__=[1]))
    w["ckpt_meta_int"] = h.rewrite_header(
        good, root / "meta_int.safetensors", lambda hd: hd["__metadata__"].update(vitc=3)
    )

    def offsets(value: Any) -> Any:
        def edit(hd: dict[str, Any]) -> None:
            key = next(k for k in hd if k != "__metadata__")
            hd[key]["data_offsets"] = value

        return edit

    w["ckpt_offsets_str"] = h.rewrite_header(good, root / "offsets_str.safetensors", offsets(["0", "4"]))
    w["ckpt_offsets_len"] = h.rewrite_header(good, root / "offsets_len.safetensors", offsets([0]))
    w["ckpt_offsets_neg"] = h.rewrite_header(good, root / "offsets_neg.safetensors", offsets([-8, 4]))
    w["ckpt_shape_huge"] = h.rewrite_header(
        good,
        root / "shape_huge.safetensors",
        lambda hd: hd[next(k for k in hd if k != "__metadata__")].update(shape=[10**6, 10**6]),
    )

    # foreign .pth files for vitc import
    sd = h.foreign_state_dict()
    w["pth_good"] = h.pth(root / "good.pth", sd)  # a vitc checkpoint is not imported: it is one already
    w["pth_int_keys"] = h.pth(root / "int_keys.pth", {i: v for i, v in enumerate(sd.values())})
    w["pth_complex"] = h.pth(root / "complex.pth", {**sd, "head.weight": sd["head.weight"].to(torch.complex64)})
    w["pth_int_tensor"] = h.pth(root / "int_tensor.pth", {**sd, "head.weight": sd["head.weight"].to(torch.int32)})
    w["pth_bool"] = h.pth(root / "bool.pth", {**sd, "head.bias": sd["head.bias"] > 0})
    w["pth_nan"] = h.pth(root / "nan.pth", {**sd, "head.bias": torch.full_like(sd["head.bias"], float("nan"))})
    norm = "blocks.0.norm1.weight"
    w["pth_inf"] = h.pth(root / "inf.pth", {**sd, norm: torch.full_like(sd[norm], float("inf"))})
    w["pth_pos_1d"] = h.pth(root / "pos_1d.pth", {**sd, "pos_embed": sd["pos_embed"].flatten()})
    w["pth_pos_nonsquare"] = h.pth(root / "pos_ns.pth", {**sd, "pos_embed": torch.zeros(1, 1 + 15, 32)})
    w["pth_zero_stride"] = h.zero_stride_pos_embed(root / "zero_stride.pth")

    # third round: metadata that later steps trust
    w["ckpt_cfg_empty"] = h.rewrite_meta(good, root / "cfg_empty.safetensors", cfg={})
    w["ckpt_classes_1e6"] = h.rewrite_meta(
        good, root / "classes_1e6.safetensors", class_names=[f"c{i}" for i in range(1_000_000)]
    )
    w["ckpt_ansi"] = h.rewrite_meta(good, root / "ansi.safetensors", class_names=["\x1b[2J\x1b[31mred", *"123456789"])

    # export artifacts: manifests and held-out sets
    export_dir = root / "export_copy"
    shutil.copytree(exports["fp32"].onnx_path.parent, export_dir)
    w["export_dir"] = export_dir
    w["manifest_deep"] = root / "deep" / "manifest.fp32.json"
    w["manifest_deep"].parent.mkdir()
    w["manifest_deep"].write_text(h.deep_json())
    w["heldout_bomb"] = h.heldout_bomb(root / "bomb.npz")
    nan_heldout = root / "nan_heldout.npz"
    np.savez(nan_heldout, images=np.zeros((4, 3, 32, 32), np.float32), labels=np.zeros(4, np.int64),
             reference_logits=np.full((4, 10), np.nan, np.float32))  # fmt: skip
    w["heldout_nan"] = nan_heldout
    w["heldout_empty"] = h.empty_heldout(root / "empty_heldout.npz")
    w["onnx_fp32"] = export_dir / "model.fp32.onnx"

    # ONNX files with absurd or unusable inputs
    image = helper.make_tensor_value_info
    w["onnx_100k"] = h.onnx_model(root / "huge_input.onnx", [image("input", TensorProto.FLOAT, [1, 3, 100000, 100000])])
    w["onnx_string"] = h.onnx_model(root / "string_input.onnx", [image("input", TensorProto.STRING, [1, 3, 8, 8])])
    w["onnx_no_input"] = h.onnx_model(root / "no_input.onnx", [], body="constant")

    # data: hostile image folders and CIFAR batches
    w["folder_bracket"] = h.image_folder(root / "bracket_set", class_names=("a[", "b[/]"))
    bomb_set = h.image_folder(root / "bomb_set")
    h.long_thin_png(bomb_set / "train" / "a" / "thin.png")
    w["folder_bomb"] = bomb_set
    w["folder_loops"] = h.symlink_loops(root / "loop_set")
    w["folder_ansi"] = h.image_folder(root / "ansi_set")
    (w["folder_ansi"] / "train" / "a" / "\x1b[2J\x1b[31mred.png").write_bytes(b"")  # unreadable: named when skipped
    cifar = root / "cifar"
    cifar.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        hostile.self_referential_cifar_batch(cifar / name)
    (cifar / "batches.meta").write_bytes(b"")
    w["cifar_loop"] = cifar

    # recipes
    w["recipe_deep"] = root / "deep.toml"
    w["recipe_deep"].write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    w["recipe_dotted"] = h.deep_dotted_toml(root / "dotted.toml")
    w["recipe_10000"] = root / "size_10000.toml"
    w["recipe_10000"].write_text("[data]\nimage_size = 10000\n")
    w["recipe_nan"] = root / "nan.toml"
    w["recipe_nan"].write_text("[optim]\nlr = nan\n")
    (root / "a_file").write_text("")
    w["a_file"] = root / "a_file"

    # run folders to resume, tampered: copied into each case's own folder ({runs}) before it runs
    runs = root / "runs_template"
    for name, config, resume_meta in [
        ("config_list", "[1, 2]", None),
        ("config_args", json.dumps({"model": {"args": [1]}, "data": {}}), None),
        ("config_deep", h.deep_json(), None),
        ("state_garbage", None, "{not json"),
        ("state_wrong", None, json.dumps({"state": {"epoch": "x"}, "info": {}, "param_groups": 3})),
    ]:
        folder = runs / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(config or json.dumps({"model": {"name": "deit_micro", "args": {}}}))
        resume = h.rewrite_header(good, folder / "resume.safetensors", lambda hd: None)
        if resume_meta is not None:
            meta = {"vitc.resume": resume_meta}
            h.rewrite_header(good, resume, lambda hd, meta=meta: hd["__metadata__"].update(meta))
    w["runs_template"] = runs

    # names that are markup or span lines
    w["markup_ckpt"] = root / "[bold]y[" / "bold]z[" / "]x.safetensors"  # the path holds "[bold]y[/bold]z[/]x"
    w["markup_ckpt"].parent.mkdir(parents=True)
    w["markup_ckpt"].write_bytes(b"not weights")
    w["newline_ckpt"] = root / "two\nlines.safetensors"
    w["newline_ckpt"].write_bytes(b"not weights")
    return w


# (id, argv template; {name} is a path from `world`, {out} a fresh output folder; expected fragment)
IMPORT = ["import", "-m", "deit_micro", "-o", "{out}"]
SMALL = ["--set", "depth=1", "--set", "embed_dim=32", "--set", "num_heads=2"]
TRAIN = ["train", "-q", "--set", "run.out_dir={out}"]
ONE_EPOCH = [*TRAIN, "--set", "optim.epochs=1", "--data", "imagefolder", "--set", "model.name=deit_micro"]
ONE_EPOCH += ["--set", "model.args.depth=1", "--set", "model.args.embed_dim=32", "--set", "model.args.num_heads=2"]
EXPORT = ["export", "{good}", "-o", "{out}"]
BENCH = ["bench", "-e", "{onnx_fp32}", "-n", "1"]
CASES: list[tuple[str, list[str], str]] = [
    # allocations sized by a file's claim
    ("ckpt embed_dim=3e8", ["export", "{ckpt_huge_dim}", "-o", "{out}"], "embed_dim"),
    ("ckpt depth=1e9", ["eval", "{ckpt_deep}"], "depth"),
    ("ckpt input_size 4096²", ["export", "{ckpt_input_4096}", "-o", "{out}"], "input_size"),
    ("ckpt shape 1e6×1e6", ["eval", "{ckpt_shape_huge}"], "safetensors"),
    ("heldout declares 1e6 images", [*BENCH, "--data", "{heldout_bomb}"], "declares"),
    ("onnx input 100000²", ["bench", "-e", "{onnx_100k}", "-n", "1"], "100000"),
    ("import --img-size 100000", [*IMPORT, "{pth_good}", "--img-size", "100000"], "img"),
    ("cifar self-referential list", [*TRAIN, "--data", "cifar10", "--data-dir", "{cifar_loop}"], "data_batch_1"),
    ("pth pos_embed zero stride", [*IMPORT, "{pth_zero_stride}", *SMALL], "zero-stride"),
    ("recipe image_size 10000", ["train", "{recipe_10000}", "--set", "run.out_dir={out}"], "data.image_size"),
    ("digits at 4096² in memory", [*TRAIN, "--set", "data.image_size=4096"], "GiB decoded"),
    # third round: tracebacks and inconsistent metadata
    ("ckpt cfg {}", ["export", "{ckpt_cfg_empty}", "-o", "{out}"], "input_size"),
    ("heldout 0 samples", [*BENCH, "--data", "{heldout_empty}"], "no samples"),
    ("recipe dotted key 3000 deep", ["train", "{recipe_dotted}"], "dotted.toml"),
    ("ckpt 1e6 class names, 10 outputs", ["export", "{ckpt_classes_1e6}", "-o", "{out}"], "for a head of 10 outputs"),
    ("symlink loop, stop", [*ONE_EPOCH, "--data-dir", "{folder_loops}", "--set", "data.on_bad_image=stop"], "self.png"),
    # paths from metadata
    ("ckpt data.dir elsewhere", ["export", "{ckpt_data_dir}", "-o", "{out}"], "--data-dir"),
    # option values
    ("bench --duration nan", ["bench", "-e", "{onnx_fp32}", "--duration", "nan"], "--duration"),
    ("bench --duration inf", ["bench", "-e", "{onnx_fp32}", "--duration", "inf"], "--duration"),
    ("bench -b 1e8", ["bench", "-e", "{onnx_fp32}", "-b", "100000000"], "batch"),
    ("bench -n -1", ["bench", "-e", "{onnx_fp32}", "-n", "-1"], "iterations"),
    ("bench --rounds 0", ["bench", "-e", "{onnx_fp32}", "--rounds", "0"], "rounds"),
    ("export --max-drop nan", ["export", "{good}", "-o", "{out}", "--max-drop", "nan"], "--max-drop"),
    ("export --batch 1e9", ["export", "{good}", "-o", "{out}", "--batch", "1000000000"], "batch"),
    ("export --calib-images 1e9", [*EXPORT, "-p", "int8", "--calib-images", "1000000000"], "calib"),
    ("train lr=nan", ["train", "{recipe_nan}", "--set", "run.out_dir={out}"], "optim.lr"),
    ("train seed -1", ["train", "--set", "run.seed=-1", "--set", "run.out_dir={out}"], "run.seed"),
    ("train seed 2**70", [*TRAIN, "--set", f"run.seed={2**70}"], "run.seed"),
    ("train out_dir is a file", ["train", "--set", "run.out_dir={a_file}", "-q"], "is a file"),
    ("train --set deep JSON", ["train", "--set", "optim.lr=" + "[" * 5000 + "]" * 5000], "optim.lr"),
    ("train deep TOML", ["train", "{recipe_deep}"], "deep.toml"),
    ("train --set markup", ["train", "--set", "optim.lr=[/x]"], "[/x]"),
    # malformed values inside well-formed files
    *[
        (f"resume {name}", ["train", "-q", "--resume", "--name", name, "--set", "run.out_dir={runs}"], fragment)
        for name, fragment in [
            ("config_list", "config.json"),
            ("config_args", "model.args"),
            ("config_deep", "config.json"),
            ("state_garbage", "resume"),
            ("state_wrong", "resume"),
        ]
    ],
    ("safetensors offsets str", ["info", "{ckpt_offsets_str}"], "data_offsets"),
    ("safetensors offsets len", ["eval", "{ckpt_offsets_len}"], "data_offsets"),
    ("safetensors offsets neg", ["eval", "{ckpt_offsets_neg}"], "data_offsets"),
    ("__metadata__ not a table", ["info", "{ckpt_meta_list}"], "__metadata__"),
    ("vitc metadata not text", ["info", "{ckpt_meta_int}"], "metadata"),
    ("metadata deep JSON", ["eval", "{ckpt_deep_json}"], "metadata"),
    ("ckpt args wrong type", ["eval", "{ckpt_str_arg}"], "depth"),
    ("ckpt args negative", ["eval", "{ckpt_neg_arg}"], "num_heads"),
    ("ckpt args float depth", ["eval", "{ckpt_float_arg}"], "depth"),
    ("ckpt input_size not a list", ["export", "{ckpt_input_bad}", "-o", "{out}"], "input_size"),
    ("ckpt mean nan", ["export", "{ckpt_mean_nan}", "-o", "{out}"], "mean"),
    ("manifest deep JSON", ["info", "{manifest_deep}"], "manifest"),
    ("onnx string input", ["bench", "-e", "{onnx_string}", "-n", "1"], "input"),
    ("onnx no input", ["bench", "-e", "{onnx_no_input}", "-n", "1"], "input"),
    ("import int keys", [*IMPORT, "{pth_int_keys}", *SMALL], "keys"),
    ("import 1-D pos_embed", [*IMPORT, "{pth_pos_1d}", *SMALL], "pos_embed"),
    ("import non-square pos_embed", [*IMPORT, "{pth_pos_nonsquare}", *SMALL], "square token grid"),
    # silently accepted before
    ("import complex tensor", [*IMPORT, "{pth_complex}", *SMALL], "complex"),
    ("import int tensor", [*IMPORT, "{pth_int_tensor}", *SMALL], "int32"),
    ("import bool tensor", [*IMPORT, "{pth_bool}", *SMALL], "bool"),
    ("import NaN weights", [*IMPORT, "{pth_nan}", *SMALL], "NaN"),
    ("import Inf weights", [*IMPORT, "{pth_inf}", *SMALL], "Inf"),
    ("heldout logits NaN", ["bench", "-e", "{onnx_fp32}", "--data", "{heldout_nan}", "-n", "1"], "finite"),
    # text that is not markup
    (
        "class folder a[",
        [*TRAIN, "--data", "imagefolder", "--data-dir", "{folder_bracket}", "--set", "data.image_size=0"],
        "data.image_size",
    ),
    ("markup file name", ["info", "{markup_ckpt}"], "[bold]y[/bold]z[/]x.safetensors"),
    ("markup output folder", ["import", "{pth_good}", "-m", "deit_micro", "-o", "{a_file}/x[/]", *SMALL], "x[/]"),
    ("newline in file name", ["eval", "{newline_ckpt}"], "two\\nlines"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(world: dict[str, Path], argv: list[str], expected: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    places = {k: str(v) for k, v in world.items()} | {"out": str(out), "runs": str(tmp_path / "runs")}
    if any("{runs}" in a for a in argv):
        shutil.copytree(world["runs_template"], tmp_path / "runs")
    argv = [a.format(**places) if "{" in a else a for a in argv]
    before = tree_digest(world["root"])
    with bounded():
        result = runner.invoke(app, argv)
    output = result.output
    assert result.exit_code == 2, (result.exit_code, output[-3000:], result.exception)
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, output
    assert expected in output, output
    assert tree_digest(world["root"]) == before, "a file outside the case's output folder changed"


# (id, argv template, fragments the output must hold): hostile input a command handles and goes on with
HANDLED: list[tuple[str, list[str], list[str]]] = [
    ("png 1×1,000,000 skipped in memory", [*ONE_EPOCH, "--data-dir", "{folder_bomb}"], ["skipped:", "thin.png"]),
    ("symlink loops skipped", [*ONE_EPOCH, "--data-dir", "{folder_loops}"], ["skipped:", "self.png"]),
    ("ANSI escapes in class names", ["info", "{ckpt_ansi}"], ["\\x1b[2J\\x1b[31mred"]),
    ("ANSI escapes in a skipped file", [*ONE_EPOCH, "--data-dir", "{folder_ansi}"], ["\\x1b[2J\\x1b[31mred.png"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in HANDLED], ids=[c[0] for c in HANDLED])
def test_hostile_input_handled(world: dict[str, Path], argv: list[str], expected: list[str], tmp_path: Path) -> None:
    """Exit 0, what was left out said, no control character from the data reaches the terminal."""
    places = {k: str(v) for k, v in world.items()} | {"out": str(tmp_path / "out")}
    argv = [a.format(**places) if "{" in a else a for a in argv]
    before = tree_digest(world["root"])
    with bounded():
        result = runner.invoke(app, argv)
    assert result.exit_code == 0, (result.exit_code, result.output[-3000:], result.exception)
    assert "\x1b" not in result.output, "a control character from the data reached the terminal"
    assert all(fragment in result.output for fragment in expected), result.output[-3000:]
    assert tree_digest(world["root"]) == before, "a file outside the case's output folder changed"
