"""Training checkpoints of timm's train.py and DeiT's/ConViT's main.py: their `args` Namespace is read as
data, a pickled function still is not, and their EMA weights are taken first, as timm's load_checkpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import load_state_dict
from vitc.cli.main import app
from vitc.importers import read_state_dict
from vitc.models import create_model
from vitc.pretrained import read_pretrained

runner = CliRunner()
SMALL = ["-m", "deit_tiny", "--set", "depth=2", "--set", "img_size=64"]
AMP_SCALER = {
    "scale": 65536.0,
    "growth_factor": 2.0,
    "backoff_factor": 0.5,
    "growth_interval": 2000,
    "_growth_tracker": 0,
}


def _weights() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(plain, EMA) weights of a small DeiT that differ in every float tensor."""
    torch.manual_seed(0)
    plain = create_model("deit_tiny", depth=2, img_size=64).state_dict()
    return plain, {k: v + 0.01 if v.is_floating_point() else v for k, v in plain.items()}


def _timm_checkpoint(plain: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    """What timm's CheckpointSaver._save writes (model_best.pth.tar, last.pth.tar, checkpoint-N.pth.tar)."""
    model = create_model("deit_tiny", depth=2, img_size=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    optimizer.step()
    args = argparse.Namespace(model="deit_tiny_patch16_224", lr=5e-4, epochs=300, input_size=None, amp=True)
    record = {"epoch": 3, "arch": "deit_tiny_patch16_224", "state_dict": plain, "optimizer": optimizer.state_dict()}
    return record | {"version": 2, "args": args, "metric": 71.2} | extra


def _import(source: Path, out: Path, *flags: str) -> tuple[int, str]:
    result = runner.invoke(app, ["import", str(source), "-o", str(out), *SMALL, *flags])
    return result.exit_code, result.output


@pytest.mark.parametrize("extra", [{}, {"amp_scaler": AMP_SCALER}], ids=["fp32", "amp"])
def test_a_timm_training_checkpoint_imports(tmp_path: Path, extra: dict[str, Any]) -> None:
    plain, _ = _weights()
    source = tmp_path / "model_best.pth.tar"
    torch.save(_timm_checkpoint(plain, **extra), source)
    code, output = _import(source, tmp_path / "out")
    assert code == 0, output
    imported = load_state_dict(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(imported[k], v) for k, v in plain.items())


def test_a_pickled_function_is_still_refused_and_named(tmp_path: Path) -> None:
    """Namespace is let through, not what it holds: an os.system call inside `args` stops the load."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    plain, _ = _weights()
    source = tmp_path / "model_best.pth.tar"
    torch.save(_timm_checkpoint(plain, args=argparse.Namespace(model=Evil())), source)
    code, output = _import(source, tmp_path / "out")
    assert code == 2 and "Traceback" not in output
    assert f"refused, unpickling it would import {os.system.__module__}.system" in output
    assert not marker.exists()


@pytest.mark.parametrize(
    ("flags", "taken", "said"),
    [
        ((), "ema", "state_dict_ema (the EMA weights, as timm loads them); vitc import --no-ema takes state_dict"),
        (("--no-ema",), "plain", "state_dict, not its EMA weights (state_dict_ema), as --no-ema asks"),
    ],
)
def test_the_ema_weights_come_first_as_in_timm(tmp_path: Path, flags: tuple[str, ...], taken: str, said: str) -> None:
    plain, ema = _weights()
    source = tmp_path / "model_best.pth.tar"
    torch.save(_timm_checkpoint(plain, state_dict_ema=ema), source)
    code, output = _import(source, tmp_path / "out", *flags)
    assert code == 0, output
    assert f"model_best.pth.tar: {said}" in " ".join(output.split())
    imported = load_state_dict(tmp_path / "out" / "model.safetensors")
    expected = ema if taken == "ema" else plain
    assert all(torch.equal(imported[k], v) for k, v in expected.items())


def test_a_file_of_ema_weights_only(tmp_path: Path) -> None:
    _, ema = _weights()
    source = tmp_path / "ema_only.pth.tar"
    torch.save({"state_dict_ema": {"module." + k: v for k, v in ema.items()}}, source)
    code, output = _import(source, tmp_path / "out")
    assert code == 0, output
    assert "state_dict_ema (the EMA weights, as timm loads them), the only weights it holds" in output
    imported = load_state_dict(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(imported[k], v) for k, v in ema.items())
    code, output = _import(source, tmp_path / "out2", "--no-ema")
    assert code == 2 and "holds only EMA weights (state_dict_ema): import it without --no-ema" in output


def test_deit_and_convit_main_py_checkpoints(tmp_path: Path) -> None:
    """DeiT's main.py saves model_ema beside model (taken first, as timm would); ConViT's saves model_ema None
    without EMA (the plain weights, nothing said)."""
    plain, ema = _weights()
    deit, convit = tmp_path / "deit.pth", tmp_path / "convit.pth"
    common = {"optimizer": {"state": {}, "param_groups": []}, "epoch": 9, "args": argparse.Namespace(model="x")}
    torch.save({"model": plain, "model_ema": ema, "scaler": AMP_SCALER, **common}, deit)
    torch.save({"model": plain, "model_ema": None, **common}, convit)
    said: list[str] = []
    taken, plain_taken, convit_taken = (
        read_state_dict(deit, say=said.append),
        read_state_dict(deit, ema=False),
        read_state_dict(convit, say=said.append),
    )
    assert said == ["deit.pth: model_ema (the EMA weights, as timm loads them); vitc import --no-ema takes model"]
    assert all(torch.equal(taken[k], v) for k, v in ema.items())
    assert all(torch.equal(plain_taken[k], v) and torch.equal(convit_taken[k], v) for k, v in plain.items())


def test_fine_tuning_from_a_timm_checkpoint_says_which_weights(tmp_path: Path) -> None:
    plain, ema = _weights()
    source = tmp_path / "last.pth.tar"
    torch.save(_timm_checkpoint(plain, state_dict_ema=ema), source)
    said: list[str] = []
    pretrained = read_pretrained(source, "deit_tiny", said.append)
    assert all(torch.equal(pretrained.state_dict[k], v) for k, v in ema.items())
    assert said == [
        "last.pth.tar: state_dict_ema (the EMA weights, as timm loads them); vitc import --no-ema takes state_dict"
    ]


def test_torch_2_4_allows_the_namespace_for_the_load_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.4 (the minimum) has no safe_globals context manager: the process-wide list is restored after."""
    monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)  # newer torch: simulate 2.4
    plain, _ = _weights()
    source = tmp_path / "model_best.pth.tar"
    torch.save(_timm_checkpoint(plain), source)
    before = list(torch.serialization.get_safe_globals())  # torch 2.4 returns its own list, not a copy
    assert read_state_dict(source).keys() == plain.keys()
    assert set(torch.serialization.get_safe_globals()) == set(before)
    with pytest.raises(Exception, match=r"argparse\.Namespace"):
        torch.load(source, weights_only=True)
