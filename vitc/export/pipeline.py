"""The `vitc export` flow: rebuild, compile, export, clean, check, bake the precision, measure drift, write.

Nothing is written until every check has passed; each file goes through `atomic_write`, so a
failure (bad input, parity, TensorRT lint, drift beyond `--max-drop`) leaves earlier artifacts as
they were.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitc import artifacts
from vitc._io import atomic_files, atomic_write, json_text, refuse_to_replace, sha256_file
from vitc._lazy import lazy_import
from vitc.artifacts import BatchRange, ExportManifest, Precision, parse_precision
from vitc.artifacts.preprocess import Preprocess, normalized
from vitc.checkpoint import resolve_checkpoint
from vitc.data.files import WHOLE, held_out_only
from vitc.errors import CheckFailed, VitcError
from vitc.export.heldout import GENERATED, heldout_set, model_classes, run_trained_on
from vitc.limits import MAX_CALIB_IMAGES

# what an export called from Python says goes to the log (its steps at INFO, skipped images and warnings at
# WARNING), not stdout; `vitc export` passes its console's print for the steps and prints the warnings on stderr
_log = logging.getLogger(__name__)
DEFAULT_MAX_DROP = {"fp32": 0.1, "fp16": 0.1, "int8": 1.0}
PARITY_ATOL = 1e-4


@dataclass
class ExportOptions:
    precision: Precision = "fp32"
    out: Path = Path("export")
    run: str | None = None
    trt: str | None = None
    opset: int | None = None
    batch: int | None = None
    dynamic_batch: str | None = None
    data: str | None = None  # the held-out set's data (default: what the checkpoint was trained on)
    data_dir: str | None = None
    calib_data: str | None = None
    calib_dir: str | None = None
    calib_images: int = 512
    calib_method: str = "minmax"
    exclude: tuple[str, ...] = ()
    max_drop: float | None = None
    explain: bool = False
    io_fp16: bool = False
    high_precision_dtype: str | None = None  # int8: what is not quantized, fp16 (None: the default) or fp32
    force: bool = False
    compile: bool = True


@dataclass
class ExportResult:
    onnx_path: Path
    manifest_path: Path
    manifest: ExportManifest
    explain: dict[str, Any] | None = None


def validate(opts: ExportOptions) -> tuple[int, BatchRange]:
    """Check options before any work; returns (opset, batch spec)."""
    from vitc.export.trt_rules import DEFAULT_OPSET, check_opset, check_version
    from vitc.quant.calib import CALIB_METHODS
    from vitc.quant.int8 import high_precision_dtype

    parse_precision(opts.precision)
    if opts.trt is not None:
        check_version(opts.trt)
    opset = opts.opset or (DEFAULT_OPSET[opts.trt] if opts.trt else 17)
    check_opset(opset, opts.trt, opts.precision)
    if opts.io_fp16 and opts.precision != "fp16":
        raise VitcError("--io fp16 needs --precision fp16")
    high_precision_dtype(opts.precision, opts.high_precision_dtype)
    if opts.calib_method not in CALIB_METHODS:
        raise VitcError(f"unknown calibration method {opts.calib_method!r} (choose one of: {', '.join(CALIB_METHODS)})")
    if opts.precision == "int8" and not 1 <= opts.calib_images <= MAX_CALIB_IMAGES:
        raise VitcError(f"--calib-images must be between 1 and {MAX_CALIB_IMAGES}, got {opts.calib_images}")
    if opts.precision == "int8":  # the calibration source, before minutes of export
        from vitc.quant.calib import calib_files, check_calib_data

        if opts.calib_data:
            check_calib_data(opts.calib_data, opts.calib_dir)
        elif opts.calib_dir:
            calib_files(Path(opts.calib_dir))
    if opts.max_drop is not None and not (math.isfinite(opts.max_drop) and -100 <= opts.max_drop <= 100):
        raise VitcError(f"--max-drop must be a number of top-1 points from -100 to 100, got {opts.max_drop}")
    batch = BatchRange.from_options(opts.batch, opts.dynamic_batch)
    if opts.precision == "int8" and not batch.dynamic and opts.calib_images < batch.max:
        from vitc.quant.calib import unfilled_batch

        raise VitcError(unfilled_batch(f"--calib-images {opts.calib_images}", batch.max))
    return opset, batch


def _compile(model: Any, input_size: tuple[int, ...], opts: ExportOptions) -> tuple[Any, Any, bool]:
    if not opts.compile:
        return model, [], False
    from vitc.compile import compile_model

    target = "tensorrt" if opts.trt else "onnx"
    compiled, report = compile_model(model, input_size=tuple(input_size), target=target, check=True)
    return compiled.eval(), report.to_dict()["rows"], True


def _torch_logits(model: Any, images: np.ndarray, batch: int = 128) -> np.ndarray:
    torch = lazy_import("torch")
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(images[i : i + batch])).float().numpy() for i in range(0, len(images), batch)]
        )


def _scopes(torch_model: Any, kinds: tuple[str, ...]) -> tuple[str, ...]:
    from vitc.export.onnx_export import module_scope

    return tuple(module_scope(n) for n, m in torch_model.named_modules() if n and type(m).__name__ in kinds)


@dataclass
class PreparedExport:
    """Steps 1-3, shared by every precision exported from one checkpoint: the model, its FP32 graph
    and the held-out reference logits are computed once."""

    meta: Any
    preprocess: Preprocess  # resolved once from the checkpoint's cfg, then the model's
    input_size: tuple[int, ...]
    opset: int
    batch: BatchRange
    compiled: Any
    passes: Any
    was_compiled: bool
    pixels: np.ndarray  # uint8, what the held-out file stores
    images: np.ndarray  # float32: the pixels normalised, the inputs the reference logits came from
    labels: np.ndarray | None  # None: generated inputs, agreement-only drift
    data_name: str
    split: str | None  # the split the held-out images are from (test, val without test/, WHOLE without splits)
    reference: np.ndarray
    proto: Any  # the cleaned, checked FP32 graph
    parity: float


def output_paths(ckpt: str | Path, opts: ExportOptions) -> tuple[Path, Path, Path]:
    """(run folder, ONNX path, manifest path), refusing to replace them without --force."""
    from vitc.checkpoint import read_meta

    ckpt = resolve_checkpoint(ckpt)  # a run folder: its best checkpoint
    if not ckpt.is_file():
        raise VitcError(f"{ckpt}: no such checkpoint")
    meta = read_meta(ckpt)  # a clear error for a file without vitc metadata
    run = opts.run or (ckpt.parent.name if ckpt.parent.name not in ("", ".") else meta.model)
    run_dir = Path(opts.out) / run
    onnx_path = run_dir / artifacts.onnx_name(opts.precision)
    manifest_path = run_dir / artifacts.manifest_name(opts.precision)
    refuse_to_replace((onnx_path, manifest_path), opts.force)
    return run_dir, onnx_path, manifest_path


def prepare_export(
    ckpt: str | Path, opts: ExportOptions, say: Callable[[str], None] = _log.info, also: Sequence[ExportOptions] = ()
) -> PreparedExport:
    """Rebuild and compile the model, export and clean the FP32 graph, check parity with PyTorch.
    `also`: the options of the other precisions this preparation serves, checked as soon as the data is known."""
    from vitc.checkpoint import read_checkpoint, training_data
    from vitc.export import onnx_export as ox

    opset, batch = validate(opts)
    ckpt = resolve_checkpoint(ckpt)  # a run folder: its best checkpoint
    # 1. rebuild and compile
    model, meta = read_checkpoint(ckpt)
    if opts.data == GENERATED:
        data_name, data_dir = GENERATED, None
    else:
        data_name, data_dir = training_data(ckpt, meta, opts.data, opts.data_dir)  # before any slow work
        for other in (opts, *also):  # INT8's train split too: a plain held-out folder has none
            if other.precision == "int8" and not (other.calib_data or other.calib_dir):
                calibration_data(ckpt, meta, other)
    prep = meta.cfg.preprocess  # the checkpoint's, typed and checked when it was read
    input_size = prep.input_size
    compiled, passes, was_compiled = _compile(model, input_size, opts)
    named = opts.data is not None or opts.data_dir is not None
    held = heldout_set(meta, prep, data_name, data_dir, named=named)
    pixels, labels = held.pixels, held.labels
    images = normalized(pixels, prep.mean, prep.std)
    for other in (opts, *also):
        check_calibration_source(labels is not None, other)
    for why in held.skipped:
        _log.warning(f"skipped: {why}")  # stderr, as every warning
    if labels is not None:
        unread = f" ({len(held.skipped)} unreadable skipped)" if held.skipped else ""
        where = f" from {data_dir}" if data_dir else ""
        part = ", the whole folder (no train/ val/ test/)" if held.split == WHOLE else f" {held.split} split"
        present, classes = len(np.unique(labels)), model_classes(meta)
        of = f", {present} of the model's {classes} classes" if classes and present < classes else ""  # as eval says
        say(f"held-out set: {held.name}{part}, {len(labels)} images{of}{where}{unread}")
        if held.split == WHOLE and data_dir and run_trained_on(ckpt, meta, Path(data_dir)):
            trained = f"{data_dir} is the train/ folder the run trained on: its drift's top-1 is on images it saw"
            _log.warning(f"warning: {trained}")
    else:
        # not asked for: no data named, and the default data's name would say nothing of why (digits, for weights
        # that name none)
        why = "" if data_name == GENERATED else f"no labelled data of the model's {model_classes(meta)} classes: "
        say(
            f"held-out set: {why}{len(images)} generated images (random pixels, no labels): drift is "
            "agreement-only (top-1 agreement, max |Δ|, cosine); --data/--data-dir name labelled data for top-1"
        )
    data_name = held.name
    reference = _torch_logits(model, images)

    # 2-3. export, clean, check, parity
    proto = ox.export_onnx(compiled, input_size, opset, batch)
    proto, counts = ox.clean(proto)
    ox.check_model(proto)
    probe = images[: max(batch.max, min(16, len(images)))] if not batch.dynamic else images[:16]
    delta = ox.parity(proto, compiled, probe, batch)
    if delta > PARITY_ATOL:
        raise VitcError(f"ONNX Runtime differs from PyTorch by {delta:.2e} (> {PARITY_ATOL:g}) in FP32")
    say(f"exported opset {opset}: {counts['nodes_after']} nodes, ORT parity max |Δ| = {delta:.1e}")
    return PreparedExport(
        meta=meta,
        preprocess=prep,
        input_size=input_size,
        opset=opset,
        batch=batch,
        compiled=compiled,
        passes=passes,
        was_compiled=was_compiled,
        pixels=pixels,
        images=images,
        labels=labels,
        data_name=data_name,
        split=held.split,
        reference=reference,
        proto=proto,
        parity=delta,
    )


def export_checkpoint(
    ckpt: str | Path,
    opts: ExportOptions,
    say: Callable[[str], None] = _log.info,
    prepared: PreparedExport | None = None,
) -> ExportResult:
    """Run the whole export for one precision of a checkpoint or a `vitc train` run folder (its best.safetensors);
    raises VitcError (artifacts untouched) on any failure.

    `prepared` (from `prepare_export` with the same checkpoint and shape options) skips steps 1-3,
    so exporting several precisions compiles and exports the model once.
    """
    ckpt = resolve_checkpoint(ckpt)  # a run folder: its best checkpoint
    if prepared is not None:  # prepare_export validated its own options, not necessarily these
        validate(opts)
    run_dir, onnx_path, manifest_path = output_paths(ckpt, opts)
    p = prepared or prepare_export(ckpt, opts, say)
    proto, precision_report, calibration = bake_precision(p, opts, ckpt, say)  # 4
    for why in (calibration or {}).get("skipped", []):
        _log.warning(f"skipped: {why} (calibration)")
    manifest = manifest_record(p, opts, ckpt, manifest_path, precision_report, calibration)
    artifacts.set_metadata(proto, manifest.to_record())
    lint_for_target(proto, opts.trt)
    drift, explained = measure_drift(proto, p, opts, say)  # 5
    heldout_bytes, heldout_sha256 = artifacts.encode_heldout(
        p.pixels, p.preprocess.mean, p.preprocess.std, p.labels, p.reference
    )
    manifest = replace(
        manifest, drift=drift, heldout_sha256=heldout_sha256, heldout=artifacts.heldout_name(heldout_sha256)
    )
    manifest = write_export(run_dir, onnx_path, proto, manifest, heldout_bytes)  # 6
    return ExportResult(onnx_path, manifest_path, manifest, explained)


def bake_precision(
    p: PreparedExport, opts: ExportOptions, ckpt: Path, say: Callable[[str], None] = _log.info
) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """A copy of the FP32 graph with the precision baked in: (graph, precision report, calibration record)."""
    from vitc.export.onnx_export import classifier_scopes

    onnx = lazy_import("onnx")
    proto = onnx.ModelProto()
    proto.CopyFrom(p.proto)  # the precision passes edit their graph; the shared FP32 one stays intact
    head = classifier_scopes(p.compiled)
    # the FP32 islands of an FP16 graph, and of an int8 graph's FP16 part
    islands = {"keep_scopes": _scopes(p.compiled, ("LayerNorm",)), "keep_patterns": opts.exclude, "keep_from": head}
    if opts.precision == "fp16":
        from vitc.quant.fp16 import convert_fp16

        proto, rep = convert_fp16(proto, io_fp16=opts.io_fp16, **islands)
        return proto, rep.to_dict(), None
    if opts.precision == "int8":
        from vitc.export.trt_rules import int8_weights
        from vitc.quant.int8 import fp16_base, high_precision_dtype, quantize_int8

        cal = _calibration(p, opts, ckpt, say)
        static = None if p.batch.dynamic else p.batch.max
        proto, rep = quantize_int8(
            proto,
            cal,
            opts.calib_method,
            static_batch=static,
            head_scopes=head,
            exclude=opts.exclude,
            int8_weights=int8_weights(opts.trt),
        )
        report = {**rep.to_dict(), "high_precision_dtype": high_precision_dtype("int8", opts.high_precision_dtype)}
        if report["high_precision_dtype"] == "fp16":  # calibrated on the FP32 graph, then the rest to FP16
            proto, half = fp16_base(proto, rep, **islands)
            report["fp16"] = half.to_dict()
        return proto, report, cal.to_dict(opts.calib_method)
    return proto, {}, None


def check_calibration_source(labelled: bool, opts: ExportOptions) -> None:
    """INT8 calibrates on real images: an agreement-only export (generated inputs) has none of its own."""
    if opts.precision == "int8" and not labelled and not (opts.calib_data or opts.calib_dir):
        raise VitcError(
            "int8 calibrates on real images and this export has no data of the model's classes: pass "
            "--calib-dir DIR (a folder of images like those the model will see, a few hundred; subfolders are read)"
        )


def _calibration(p: PreparedExport, opts: ExportOptions, ckpt: Path, say: Callable[[str], None]) -> Any:
    """INT8 calibration images: --calib-data (with --calib-dir), else any folder of images --calib-dir
    names, else the train split of the held-out set's data (`calibration_data`). Fewer than --calib-images
    asked is said in a line (the manifest records how many)."""
    from vitc.quant.calib import calibration_set, folder_calibration_set

    check_calibration_source(p.labels is not None, opts)
    static = None if p.batch.dynamic else p.batch.max  # a static-batch graph calibrates on whole batches
    if opts.calib_dir and not opts.calib_data:
        cal = folder_calibration_set(Path(opts.calib_dir), opts.calib_images, p.preprocess, whole_batches=static)
    else:
        if opts.calib_data:
            name, data_dir = opts.calib_data, opts.calib_dir
        else:
            name, data_dir = calibration_data(ckpt, p.meta, opts, say)
        cal = calibration_set(
            name, opts.calib_images, p.preprocess, data_dir, classes=p.meta.class_names, whole_batches=static
        )
    used = len(cal.images)
    found = used if cal.drawn is None else cal.drawn
    if used < opts.calib_images:
        why = [f"{found} readable in {cal.source}"] if found < opts.calib_images else []
        why += [f"whole batches of {static}"] if used < found else []
        say(f"calibrating on {used} images of the {opts.calib_images} asked ({'; '.join(why)})")
    return cal


def calibration_data(
    ckpt: Path, meta: Any, opts: ExportOptions, say: Callable[[str], None] = lambda _m: None
) -> tuple[str, str | None]:
    """The data whose train split INT8 calibrates on when no --calib-* names it: the held-out set's (see
    checkpoint.training_data). A folder without train/ (`held_out_only`) has no train split: the
    run's own training data then, as when no --data-dir is given (said in a line); weights that record
    none are one line asking for --calib-dir, not calibrated on the bundled digits."""
    from vitc.checkpoint import training_data
    from vitc.data.files import check_data_dir

    name, data_dir = training_data(ckpt, meta, opts.data, opts.data_dir)
    if name != "imagefolder" or data_dir is None or not held_out_only(Path(data_dir)):
        return name, data_dir
    trained = (meta.extra.get("train_config") or {}).get("data") or {}
    why = f"{ckpt} names no training data on this machine"
    try:
        own = training_data(ckpt, meta) if isinstance(trained, dict) and trained.get("name") else None
        if own is not None:  # checked now: INT8 calibrates after the other precisions are written
            check_data_dir(*own)
    except VitcError as exc:  # trained elsewhere, or its folder moved: not known here
        own, why = None, f"the run's training data is not there ({exc})"
    if own is None:
        raise VitcError(
            f"int8 calibrates on a train split: {data_dir} has no train/ (it is read as the held-out set only) "
            f"and {why}; pass --calib-dir DIR (a folder of images like those the model will see, a few hundred; "
            "subfolders are read)"
        )
    where = f" in {own[1]}" if own[1] else ""
    say(f"calibrating on {own[0]}'s train split{where}, the run's training data: {data_dir} has no train/")
    return own


def manifest_record(
    p: PreparedExport,
    opts: ExportOptions,
    ckpt: Path,
    manifest_path: Path,
    precision_report: dict[str, Any],
    calibration: dict[str, Any] | None,
) -> ExportManifest:
    """The export manifest (vitc.artifacts.manifest) before drift and hashes are known."""
    from vitc.export.onnx_export import INPUT_NAME, OUTPUT_NAME, exported_by

    meta = p.meta
    c, h, w = p.input_size
    return ExportManifest(
        path=manifest_path,
        model=meta.model,
        args=meta.args,
        input_size=(c, h, w),
        mean=meta.cfg.mean,
        std=meta.cfg.std,
        class_names=meta.class_names,
        preprocess=p.preprocess.to_record(),
        precision=opts.precision,
        io_dtype="float16" if opts.io_fp16 else "float32",
        opset=p.opset,
        trt_target=opts.trt,
        batch=p.batch,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        source_checkpoint={"path": str(ckpt), "sha256": sha256_file(ckpt)},
        compiled=p.was_compiled,
        passes=p.passes,
        precision_report=precision_report,
        parity_max_abs_diff=p.parity,
        calibration=calibration,
        exported_by=exported_by(),
    )


def lint_for_target(proto: Any, trt: str | None) -> None:
    """What the target TensorRT's parser would refuse, before anything is written."""
    from vitc.export.onnx_export import check_model
    from vitc.export.trt_rules import check_onnx

    if trt:
        findings = check_onnx(proto, trt)
        if findings:
            more = f"; … {len(findings) - 5} more" if len(findings) > 5 else ""
            raise VitcError(f"TensorRT {trt} cannot take this graph: " + "; ".join(map(str, findings[:5])) + more)
    check_model(proto)


def measure_drift(
    proto: Any, p: PreparedExport, opts: ExportOptions, say: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Top-1 and logit drift on the held-out split against PyTorch FP32; refuses beyond --max-drop."""
    from vitc._ort import ort_session
    from vitc.artifacts.drift import compare_logits
    from vitc.export import onnx_export as ox
    from vitc.quant.int8 import high_precision_dtype

    (logits,) = ox.run_batches(ort_session(proto), p.images, p.batch)  # optimised, as the runner runs it
    drift = compare_logits(p.reference, logits, p.labels)
    explained = None
    if opts.explain:
        from vitc.export.explain import explain

        probe = p.images[: max(p.batch.max, 64)] if not p.batch.dynamic else p.images[:64]
        explained = explain(proto, p.compiled, probe, p.batch)
    max_drop = DEFAULT_MAX_DROP[opts.precision] if opts.max_drop is None else opts.max_drop
    top1 = (
        f"top-1 {drift.top1:.2f}% vs {drift.reference_top1:.2f}% (Δ {drift.delta_top1:+.2f}), "
        if drift.labelled
        else f"agreement only ({drift.samples} generated inputs, no labels: --max-drop does not apply): "
    )
    base = high_precision_dtype(opts.precision, opts.high_precision_dtype)
    say(
        f"{opts.precision}{f' ({base} base)' if base else ''}: {top1}agreement {drift.agreement:.1f}%, "
        f"max |Δ logit| {drift.max_abs_diff:.3g}, cosine {drift.cosine:.5f}"
    )
    if drift.exceeds(max_drop):
        first = f"; first drifting block: {explained['first_bad']}" if explained and explained["first_bad"] else ""
        raise CheckFailed(
            f"{opts.precision} lost {-drift.delta_top1:.2f} points of top-1 (> --max-drop {max_drop}); "
            f"nothing written{first}"
        )
    if not drift.labelled:
        inputs = "uniform random pixels (seed 0), normalised; no labels"
        return {**drift.to_dict(), "data": GENERATED, "inputs": inputs, "split": None, "max_drop": None}, explained
    return {**drift.to_dict(), "data": p.data_name, "split": p.split, "max_drop": max_drop}, explained


def write_export(
    run_dir: Path, onnx_path: Path, proto: Any, manifest: ExportManifest, heldout: bytes
) -> ExportManifest:
    """Held-out set (named by its hash, so it never replaces another export's), then ONNX and manifest
    together (`atomic_files`: a Ctrl-C between their renames left the new ONNX beside the old manifest,
    neither export usable); a SIGKILL between the two renames leaves hashes that every reader refuses
    (vitc.artifacts). Returns the manifest as written, with the ONNX file's hash."""
    onnx = lazy_import("onnx")
    artifacts.set_metadata(proto, manifest.to_record())
    heldout_path = run_dir / str(manifest.heldout)
    if not heldout_path.is_file() or sha256_file(heldout_path) != manifest.heldout_sha256:
        with atomic_write(heldout_path) as tmp:
            tmp.write_bytes(heldout)
    with atomic_files() as files:
        staged_onnx = files.stage(onnx_path)
        onnx.save(proto, str(staged_onnx))
        manifest = replace(manifest, onnx_sha256=sha256_file(staged_onnx))
        files.stage(manifest.path).write_text(json_text(manifest.to_record()))
    artifacts.prune_heldout(run_dir)
    return manifest
