"""Every command, every kind of bad file: one line on stderr, exit code 2, no traceback, nothing lost.

Complements the per-command tests (tests/test_cli_import.py, tests/train, tests/export,
tests/bench): the cases here are the file types a user downloads or a job half-writes.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from vitc import _io
from vitc.checkpoint import META_KEY, CheckpointMeta, write_checkpoint
from vitc.cli.main import app
from vitc.models import create_model, model_cfg

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad artifacts of every kind the commands read."""
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    good = write_checkpoint(root / "good.safetensors", create_model("deit_micro", depth=1))
    data = good.read_bytes()
    out = {"good": good}
    (out := out | {"empty": root / "empty.safetensors"})["empty"].write_bytes(b"")
    out["truncated"] = root / "truncated.safetensors"
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["text"] = root / "notes.safetensors"
    out["text"].write_text("these are not weights\n")
    meta = CheckpointMeta(model="deit_mikro", args={}, cfg=model_cfg("deit_micro"))  # a model that does not exist
    out["unknown_model"] = root / "unknown.safetensors"  # written by hand: write_checkpoint refuses such a file
    weights = create_model("deit_micro", depth=1).state_dict()
    save_file(weights, str(out["unknown_model"]), metadata={META_KEY: meta.to_json()})
    out["onnx_garbage"] = root / "garbage.onnx"
    out["onnx_garbage"].write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    out["onnx_truncated"] = root / "truncated.onnx"
    out["plan_foreign"] = root / "model.plan"
    out["plan_foreign"].write_bytes(b"PK\x03\x04" + bytes(64))  # a zip file renamed .plan
    out["plan_truncated"] = root / "short.plan"
    out["plan_truncated"].write_bytes(b"ftrt" + bytes(6))
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 10])],  # rank 2: not an image model
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime 1.18+ and TensorRT 8.5+ read
    serialized = model.SerializeToString()
    out["heldout"] = root / "heldout.npz"
    np.savez(out["heldout"], images=np.zeros((4, 3, 8, 8), np.float32), labels=np.zeros(4, np.int64),
             reference_logits=np.zeros((4, 10), np.float32))  # fmt: skip
    out["onnx_truncated"].write_bytes(serialized[: len(serialized) // 2])
    out["onnx_rank2"] = root / "rank2.onnx"
    out["onnx_rank2"].write_bytes(serialized)
    assert onnx is not None
    return out


CASES = [
    # (command + args with {placeholders}, expected message fragment)
    (["eval", "{empty}"], "empty"),
    (["eval", "{truncated}"], "truncated"),
    (["eval", "{text}"], "not a safetensors file"),
    (["eval", "{unknown_model}"], "unknown model 'deit_mikro'"),
    (["inspect", "{truncated}"], "truncated"),
    (["export", "{text}"], "not a safetensors file"),
    (["export", "{unknown_model}"], "unknown model"),
    (["info", "{text}"], "not a safetensors file"),
    (["info", "{onnx_garbage}"], "not a readable ONNX model"),
    (["info", "{onnx_truncated}"], "not a readable ONNX model"),
    (["info", "{plan_foreign}"], "not a TensorRT plan"),
    (["info", "{plan_truncated}"], "truncated TensorRT plan"),
    (["check", "{onnx_garbage}", "--trt", "10"], "not a readable ONNX model"),
    (["check", "{onnx_truncated}", "--trt", "10"], "not a readable ONNX model"),
    (["bench", "-e", "{onnx_garbage}"], "ONNX"),
    (["bench", "-e", "{onnx_rank2}", "--data", "{text}"], "not a held-out set"),
    (["bench", "-e", "{onnx_rank2}", "--data", "{heldout}"], "the held-out images are 3×8×8 and the model takes 10"),
    (["bench", "-e", "{plan_foreign}"], "not a TensorRT plan"),
    (["build", "{onnx_truncated}"], "vitc build needs TensorRT, CUDA bindings"),  # with them: the parser's error
    (["import", "{text}", "-m", "deit_micro", "-o", "{root}/imp"], "not a safetensors file"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40])
def test_bad_files(files: dict[str, Path], args: list[str], message: str) -> None:
    places = {k: str(v) for k, v in files.items()} | {"root": str(files["good"].parent)}
    result = runner.invoke(app, [a.format(**places) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert message in result.output


@pytest.mark.parametrize(
    ("err", "message"), [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "read-only")]
)
def test_full_disk_and_read_only_folders_are_named_and_keep_the_old_file(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, message: str
) -> None:
    source = tmp_path / "deit.pth"
    torch.save(create_model("deit_micro", depth=1).state_dict(), source)
    args = ["import", str(source), "-m", "deit_micro", "-o", str(tmp_path / "o"), "--set", "depth=1"]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "o" / "model.safetensors").read_bytes()

    def fail(*_: object, **__: object) -> None:
        raise OSError(err, "injected")

    monkeypatch.setattr(_io.os, "replace", fail)  # the write reaches the final rename, then the disk says no
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == before
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["model.safetensors"]  # no temporary left behind


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    source = tmp_path / "deit.pth"
    torch.save(create_model("deit_micro", depth=1).state_dict(), source)
    result = runner.invoke(
        app, ["import", str(source), "-m", "deit_micro", "-o", str(blocker / "o"), "--set", "depth=1"]
    )
    assert result.exit_code == 2 and "cannot write" in result.output


def test_debug_env_shows_the_traceback(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITC_DEBUG", "1")
    result = runner.invoke(app, ["eval", str(files["truncated"])])
    assert result.exit_code != 0 and result.exception is not None and "truncated" in str(result.exception)
