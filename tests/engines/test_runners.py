"""Runner selection, the manifest reader, ONNX Runtime and PyTorch runners."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.engines.conftest import manifest_record
from vitc.artifacts import load_heldout, load_manifest, manifest_for, parse_manifest
from vitc.engines import backend_for_path, runner_class, runner_for_path
from vitc.engines.onnxrt import choose_providers
from vitc.errors import VitcError


def test_backend_by_suffix(tmp_path: Path):
    assert backend_for_path("a/model.fp16.onnx") == "onnxrt"
    assert backend_for_path("engines/m.plan") == backend_for_path("m.engine") == "tensorrt"
    with pytest.raises(VitcError, match="suffix"):
        backend_for_path("m.pt")
    with pytest.raises(VitcError, match="no such file"):
        runner_for_path(tmp_path / "missing.onnx")
    assert runner_class("tensorrt").__name__ == "TensorRTRunner"
    with pytest.raises(VitcError, match="unknown backend"):
        runner_class("tflite")


def test_provider_choice():
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu) == gpu
    assert choose_providers(gpu, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(gpu, "cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(VitcError, match="no GPU provider"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_manifest_and_heldout(export_dir: Path, tmp_path: Path):
    manifest = load_manifest(export_dir)
    assert manifest.onnx_path == export_dir / "model.fp32.onnx" and manifest.batch.opt == 4
    assert manifest_for(manifest.onnx_path) == manifest and manifest_for(tmp_path / "x.onnx") is None
    heldout = load_heldout(export_dir)
    assert len(heldout) == 12 and heldout.images.dtype == np.float32
    with pytest.raises(VitcError, match="precision"):
        parse_manifest(manifest_record(precision="fp8"), tmp_path / "m.json")
    with pytest.raises(VitcError, match="not a vitc export"):
        parse_manifest({"format": "other"}, tmp_path / "m.json")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 3, 8, 8)), labels=np.zeros(3))
    with pytest.raises(VitcError, match="lacks reference_logits"):
        load_heldout(bad)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_record(batch={"min": 4, "opt": 2, "max": 1})))
    with pytest.raises(VitcError, match="min <= opt <= max"):
        load_manifest(tmp_path)


def test_precision_is_listed_and_parsed_once():
    from vitc.artifacts import PRECISIONS, parse_precision, precision_in_name

    assert PRECISIONS == ("fp32", "fp16", "int8")
    assert precision_in_name("export/r/model.fp16.onnx") == "fp16"
    assert precision_in_name(Path("manifest.int8.json")) == precision_in_name("convit.int8.plan") == "int8"
    assert precision_in_name("model.onnx") is None and precision_in_name("model.bf16.onnx") is None
    assert precision_in_name("fp16.onnx") is None  # the run name, not a precision part
    assert parse_precision("fp32") == "fp32"
    with pytest.raises(VitcError, match=r"m.json: unknown precision 'fp8' \(choose one of: fp32, fp16, int8\)"):
        parse_precision("fp8", "m.json")


def test_onnxruntime_runner(tiny_onnx: Path):
    runner = runner_for_path(tiny_onnx, device="cpu", threads=1)
    with pytest.raises(VitcError, match="activate"):
        runner.infer({})
    with runner:
        assert [m.name for m in runner.get_input_metadata()] == ["input"]
        assert runner.get_input_metadata()[0].shape == (None, 3, 8, 8)
        out = runner.infer(runner.make_feed(4))["logits"]
        assert out.shape == (4, 10) and np.allclose(out.sum(1), 1, atol=1e-5)
        assert runner.inference_time is not None and runner.inference_time > 0 and runner.gpu_time is None
        assert runner.info().detail["providers"] == ["CPUExecutionProvider"]
        with pytest.raises(VitcError, match="inputs"):
            runner.infer({"x": np.zeros((1, 3, 8, 8), np.float32)})
    assert not runner.is_active


def test_onnx_runtime_failing_without_a_message_is_one_line(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch):
    """An onnxruntime error with an empty message, loading or running: `str(exc).splitlines()[0]` raised
    IndexError in place of the one-line error; now the exception's type stands for its message."""
    import onnxruntime as ort

    class Fail(Exception):
        pass

    def fails(*args: object, **kwargs: object) -> None:
        raise Fail()

    with runner_for_path(tiny_onnx, device="cpu", threads=1) as runner:
        monkeypatch.setattr(runner.session, "run", fails)
        with pytest.raises(VitcError) as refused:
            runner.infer(runner.make_feed(1))
        assert str(refused.value) == f"{tiny_onnx}: ONNX Runtime failed to run it (Fail)"
    monkeypatch.setattr(ort, "InferenceSession", fails)
    with pytest.raises(VitcError) as refused:
        runner_for_path(tiny_onnx, device="cpu", threads=1).activate()
    assert str(refused.value) == f"ONNX Runtime cannot load {tiny_onnx} (graph optimisations on): Fail"


def test_runners_refuse_integer_pixels_and_cast_floats(tiny_onnx: Path, tmp_path: Path):
    """uint8 pixels were cast to float32 and run unnormalised with no error (ONNX Runtime itself, PyTorch and
    Polygraphy refuse them); float64 and float16 arrays still run, and float32 feeds an fp16-I/O graph."""
    from tests.engines.conftest import make_tiny_onnx
    from vitc.engines.base import infer_in_batches

    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    with runner_for_path(tiny_onnx, device="cpu", threads=1) as runner:
        for bad in (pixels, pixels.astype(np.int64), pixels > 127):
            with pytest.raises(VitcError, match=r"takes normalised float32 pixels, got a .* array: normalise") as err:
                runner.infer({"input": bad})
            assert "\n" not in str(err.value) and "vitc.preprocess" in str(err.value)
        with pytest.raises(VitcError, match="got a uint8 array"):
            infer_in_batches(runner, pixels)  # what Classifier.logits runs
        x = pixels.astype(np.float32) / 255
        ref = runner.infer({"input": x})["logits"]
        assert np.allclose(runner.infer({"input": x.astype(np.float64)})["logits"], ref)
        assert np.allclose(runner.infer({"input": x.astype(np.float16)})["logits"], ref, atol=1e-3)
    half = make_tiny_onnx(tmp_path / "m.fp16.onnx", precision="fp16", io_type=10)
    with runner_for_path(half, device="cpu", threads=1) as runner:
        assert runner.get_input_metadata()[0].dtype == "float16"
        assert runner.infer({"input": x})["logits"].shape == (2, 10)
        with pytest.raises(VitcError, match="got a uint8 array"):
            runner.infer({"input": pixels})


def test_torch_runner_convit_micro():
    torch = pytest.importorskip("torch")
    from vitc.engines.torch_runner import TorchRunner, model_from_zoo

    torch.manual_seed(0)
    with TorchRunner(model_from_zoo("convit_micro"), threads=1) as runner:
        meta = runner.get_input_metadata()[0]
        assert meta.shape == (None, 3, 32, 32)
        out = runner.infer(runner.make_feed(2))["logits"]
        assert out.shape == (2, 10) and np.isfinite(out).all()
        assert runner.info().backend == "torch"


def test_torch_runner_compiled_matches_eager():
    pytest.importorskip("torch")
    pytest.importorskip("vitc.compile")
    from vitc.bench.runner import torch_runners

    eager, compiled = torch_runners(
        "convit_micro", None, compare=True, torch_compile=False, device="cpu", autocast="fp32"
    )
    feed = {"input": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    with eager:
        ref = eager.infer(feed)["logits"]
    with compiled:
        out = compiled.infer(feed)["logits"]
    assert np.abs(ref - out).max() < 1e-4


def test_torch_runner_serves_the_checkpoint_after_reactivation(tmp_path):
    """The runner rebuilt a random zoo model on its second activation (logits 0.58 apart)."""
    torch = pytest.importorskip("torch")
    from vitc.checkpoint import write_checkpoint
    from vitc.engines.torch_runner import TorchRunner, model_from_checkpoint
    from vitc.models import create_model

    torch.manual_seed(1)
    ckpt = write_checkpoint(tmp_path / "run" / "best.safetensors", create_model("deit_micro", depth=1))
    runner = TorchRunner(model_from_checkpoint(ckpt), threads=1)
    feed = {"input": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    with runner:
        first = runner.infer(feed)["logits"]
    with runner:
        second = runner.infer(feed)["logits"]
    assert np.array_equal(first, second)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = create_model("deit_micro", depth=1).eval()(torch.from_numpy(feed["input"])).numpy()
    assert np.allclose(first, expected, atol=1e-6)


def test_a_failed_activation_undoes_what_it_set_up():
    """activate_impl that fails half-way left what it had set up (TorchRunner: torch's process-wide thread count)
    in place; now deactivate_impl undoes it, the runner stays inactive and the activation's own error is raised,
    even when the undoing fails too."""
    from vitc.engines.base import BaseRunner, TensorMeta

    class HalfWay(BaseRunner):
        def __init__(self, undo_fails: bool) -> None:
            super().__init__("half-way")
            self.undo_fails, self.set_up = undo_fails, False

        def activate_impl(self) -> None:
            self.set_up = True
            raise VitcError("the loader failed")

        def deactivate_impl(self) -> None:
            self.set_up = False
            if self.undo_fails:
                raise RuntimeError("nothing to undo")

        def infer_impl(self, feed):
            raise AssertionError("never called")

        def get_input_metadata(self):
            return [TensorMeta("input", (None, 3))]

        def get_output_metadata(self):
            return [TensorMeta("logits", (None, 2))]

    for undo_fails in (False, True):
        runner = HalfWay(undo_fails)
        with pytest.raises(VitcError, match="the loader failed"):
            runner.activate()
        assert not runner.set_up and not runner.is_active


def test_a_torch_runner_whose_loader_fails_gives_torchs_threads_back(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from vitc.engines.torch_runner import TorchRunner, model_from_checkpoint

    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    runner = TorchRunner(model_from_checkpoint(tmp_path / "missing.safetensors"), threads=threads)
    with pytest.raises(VitcError, match="no such file"):
        runner.activate()
    assert torch.get_num_threads() == before


def test_a_zoo_models_seeded_weights_leave_the_callers_random_stream_alone():
    """model_from_zoo seeded torch's global generator: every draw after a runner's activation was the same
    whatever seed the caller had set. The weights are still seed 0's."""
    torch = pytest.importorskip("torch")
    from vitc.engines.torch_runner import model_from_zoo
    from vitc.models import create_model

    torch.manual_seed(0)
    expected = create_model("deit_micro", depth=1).state_dict()
    torch.manual_seed(123)
    undisturbed = torch.rand(3)
    torch.manual_seed(123)
    model = model_from_zoo("deit_micro", depth=1)()
    assert torch.equal(torch.rand(3), undisturbed)
    assert all(torch.equal(tensor, expected[key]) for key, tensor in model.state_dict().items())
