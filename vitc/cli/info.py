"""`vitc info ARTIFACT`: what a checkpoint, resume file, ONNX file, export folder or its held-out set, TensorRT plan,
a report vitc wrote (eval, predict, bench, compile, inspect) or a training run's record (summary.json, config.json,
metrics.jsonl, the image folder's listing index.json) says about itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import typer
from rich.table import Table
from typing_extensions import Annotated

from vitc._io import ReportKind
from vitc._run_layout import CONFIG, INDEX, METRICS, SUMMARY, RunLayout, is_run_folder, run_checkpoint, run_record
from vitc._terminal import Fitted
from vitc.cli._console import console as plain_console
from vitc.cli._console import printable
from vitc.errors import VitcError

LIST_SHOWN = 12  # list items shown before "… (n items)"


def describe(path: Path) -> dict[str, Any]:
    """The metadata of an artifact, as a JSON-able record (no torch; onnx only for .onnx); an export whose
    ONNX file is not the one its manifest describes, or is missing, is refused, as every other reader refuses it."""
    record, refusal = _described(path)
    if refusal is not None:
        raise refusal
    return record


def _described(path: Path) -> tuple[dict[str, Any], VitcError | None]:
    """The record, and the refusal of an export's mixed or missing files: `vitc info` shows the record first,
    its table saying which file differs or is missing, then refuses."""
    from vitc.artifacts.sidecar import PLAN_SUFFIXES

    if not path.exists():
        raise VitcError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if is_run_folder(path):  # a `vitc train` run folder: its best checkpoint, as eval and export read it
        best = _describe_safetensors(run_checkpoint(path))
        return {"kind": best["kind"], **_unfinished(path), **best}, None
    weights = _describe_weights_folder(path) if path.is_dir() else None
    if weights is not None:
        return weights, None
    if path.is_dir() or (path.name.startswith("manifest.") and path.suffix == ".json"):
        return _describe_exports(path)
    record = _describe_run_record(path)
    if record is not None:
        return record, None
    if suffix == ".safetensors":
        return _describe_safetensors(path), None
    if suffix == ".onnx":
        return _describe_onnx(path), None
    if suffix == ".pt2":
        return _describe_program(path), None
    if suffix == ".npz":  # an export's held-out set, heldout.<sha16>.npz
        from vitc.artifacts.heldout import heldout_summary

        return {"kind": "vitc held-out set", **heldout_summary(path)}, None
    if suffix in PLAN_SUFFIXES:
        from vitc.engines.trt_plan import plan_summary

        return {"kind": "tensorrt plan", **plan_summary(path)}, None
    report = _describe_report(path) if suffix == ".json" else None
    if report is not None:
        return report, None
    raise VitcError(
        f"{path}: unknown artifact (expected .safetensors, .onnx, .pt2, .plan, an export folder or its held-out "
        f"set (.npz), a vitc report or a run's {SUMMARY}, {CONFIG}, {METRICS} or {INDEX})"
    )


def _reports() -> tuple[tuple[ReportKind, Callable[[dict[str, Any]], dict[str, Any]]], ...]:
    """Each JSON report a vitc command writes, as that command recognises its own earlier one before replacing
    it (its ReportKind: a `format`, or keys it has always carried), with what `vitc info` shows of it."""
    from vitc.artifacts.eval_report import EVAL_JSON
    from vitc.bench.report import JSON_REPORT
    from vitc.cli.compile import COMPILE_JSON
    from vitc.cli.inspect import SUMMARY as INSPECT_SUMMARY
    from vitc.cli.predict import PREDICT_JSON

    return (
        (EVAL_JSON, _eval_summary),
        (PREDICT_JSON, _predict_summary),
        (JSON_REPORT, _bench_summary),
        (COMPILE_JSON, dict),
        (INSPECT_SUMMARY, dict),
    )


def _describe_report(path: Path) -> dict[str, Any] | None:
    """A vitc report's figures (its per-image and per-class bulk counted, not listed), or None: not one."""
    from vitc._io import json_record

    for kind, summary in _reports():
        record = json_record(path) if kind.recognise(path) else None
        if record is not None:
            return {"kind": kind.name, **summary(record)}
    return None


def _run_records() -> dict[str, tuple[str, Callable[[Path], dict[str, Any] | None]]]:
    """Each record `vitc train` writes in its run folder that `vitc info` describes (recognised as a run's as
    no report may replace it: vitc._run_layout.run_record), with what it shows of it."""
    from vitc.data.folder_index import index_summary

    return {
        SUMMARY: ("vitc train summary", _json_object),  # flat: one row per figure, as `vitc train` printed them
        CONFIG: ("vitc train config", _train_config),  # a row per section
        METRICS: ("vitc train metrics", _metrics_summary),
        INDEX: ("vitc image-folder index", index_summary),  # a row per split: current, or stale
    }


def _describe_run_record(path: Path) -> dict[str, Any] | None:
    """A run's summary.json, config.json or metrics.jsonl, or None: not one."""
    name = run_record(path)
    described = _run_records().get(name) if name is not None else None
    if described is None:
        return None
    kind, summary = described
    record = summary(path)
    return None if record is None else {"kind": kind, **record}


TRAIN_CONFIG_SECTIONS = ("model", "optim")  # sections every vitc train config.json holds, no HF config.json does


def _train_config(path: Path) -> dict[str, Any] | None:
    """A run's config.json as a row per section; None where it is not vitc's (a Hugging Face model folder's
    config.json, beside which a run folder's name rule also matches)."""
    record = _json_object(path)
    if not all(isinstance(record.get(section), dict) for section in TRAIN_CONFIG_SECTIONS):
        return None
    return {"train_config": record}


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object a run's record holds; anything else (damaged, cut short) is one line saying so."""
    from vitc._io import parse_json

    record = parse_json(path.read_bytes(), str(path))
    if not isinstance(record, dict):
        raise VitcError(f"{path} holds no JSON object, not what vitc train writes")
    return record


def _metrics_summary(path: Path) -> dict[str, Any]:
    """metrics.jsonl, one row per epoch: how many, the best validation top-1 and its epoch, and the last
    epoch's row whole (losses, lr, top-1/top-5; `vitc train` prints each as it ends, curves.png draws them)."""
    from vitc._io import parse_json

    epochs = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        row = parse_json(line, f"{path} line {number}") if line.strip() else None
        if row is not None and not isinstance(row, dict):
            raise VitcError(f"{path} line {number} is not an epoch's record, not what vitc train writes")
        if row is not None:
            epochs.append(row)
    scored = [row for row in epochs if isinstance(row.get("val_top1"), (int, float))]  # null: a NaN top-1
    best = max(scored, key=lambda row: row["val_top1"], default=None)  # the first of equals, as best.safetensors
    return {
        "epochs": len(epochs),
        "best_val_top1": None if best is None else best["val_top1"],
        "best_epoch": None if best is None else best.get("epoch"),
        "last_epoch": epochs[-1] if epochs else None,
    }


def _count(value: Any) -> Any:
    """How many items a list holds (what a report lists per image or class); anything else as it is."""
    return len(value) if isinstance(value, list) else value


def _eval_summary(report: dict[str, Any]) -> dict[str, Any]:
    """`vitc eval`'s JSON: what was measured on what, top-1/top-5; its classes and skipped images counted
    (the per-class figures and the confusion matrix stay in the file: `vitc eval` prints them)."""
    return {k: _count(v) for k, v in report.items() if k != "confusion"}


def _predict_summary(report: dict[str, Any]) -> dict[str, Any]:
    """`vitc predict --json`: its source and timing; each image's first class (the first few of them)."""
    images = report.get("images") if isinstance(report.get("images"), list) else []
    firsts = []
    for row in images:
        top = row.get("top") if isinstance(row, dict) else None
        if top and isinstance(top[0], list) and len(top[0]) == 2 and isinstance(top[0][1], (int, float)):
            firsts.append(f"{row.get('image')}: {top[0][0]} ({100 * top[0][1]:.1f}%)")
    summary = {k: _count(v) for k, v in report.items()}
    return {**summary, "images": len(images), "top_1": firsts}


def _bench_summary(report: dict[str, Any]) -> dict[str, Any]:
    """`vitc bench --json`: one line per runner and batch (p50, img/s, spread, CV, ratio, top-1), its settings and
    machine; the notes on what each time means are bench's (`vitc bench` prints them)."""
    rows = []
    for row in report.get("rows") or []:
        e2e = row.get("e2e") or {}
        accuracy = row.get("accuracy") or {}
        line = {
            "runner": row.get("runner"),
            "batch": row.get("batch"),
            "p50_ms": e2e.get("p50"),
            "img/s": e2e.get("throughput"),
            "spread_%": None if e2e.get("spread") is None else round(100 * e2e["spread"], 1),
            "cv_%": None if e2e.get("cv") is None else round(100 * e2e["cv"], 1),
            "ratio": row.get("ratio_vs_first"),
            "top1_%": accuracy.get("top1"),
        }
        rows.append({k: v for k, v in line.items() if v is not None})
    kept = ("baseline", "settings", "environment", "warnings")
    return {**{k: report.get(k) for k in kept}, "rows": rows}


def _describe_exports(path: Path) -> tuple[dict[str, Any], VitcError | None]:
    """A manifest or a folder of one export: its record; of several (one per precision): all of them, keyed
    by precision. Each with `onnx_file`, the state of its ONNX file (ok, sha256 differs, missing, or no
    sha256 in an older manifest), and the refusal when any differs or is missing (a differing one first)."""
    from vitc.artifacts import load_manifest, manifest_paths
    from vitc.artifacts.manifest import FILE_DIFFERS, FILE_MISSING, file_state, unusable_export

    found = manifest_paths(path) if path.is_dir() else []
    manifests = [load_manifest(p) for p in found] if len(found) > 1 else [load_manifest(path)]  # none: it says
    states = [file_state(m.onnx_path, m.onnx_sha256) for m in manifests]
    records = [{**m.to_record(), "onnx_file": state} for m, state in zip(manifests, states)]
    refusal = None
    for refused in (FILE_DIFFERS, FILE_MISSING):  # a differing file is said first
        pairs = [(m.onnx_path, m.path) for m, state in zip(manifests, states) if state == refused]
        if pairs:
            refusal = unusable_export(pairs, refused)
            break
    if len(manifests) == 1:
        return {"kind": "vitc export", **records[0]}, refusal
    exports = {m.precision: record for m, record in zip(manifests, records)}
    return {"kind": "vitc exports", "folder": str(path), "exports": exports}, refusal


def _describe_weights_folder(path: Path) -> dict[str, Any] | None:
    """A folder of weights under a Hugging Face name and no export manifest: the one `vitc import --out` writes
    (its model.safetensors a vitc checkpoint, as `vitc.load_model` reads the folder) is that checkpoint; a
    Hugging Face or timm folder's own weights (config.json beside them) are one line saying how to use them.
    None for any other folder (an export's, or one vitc does not know: the export reader says so)."""
    from vitc.artifacts import manifest_paths
    from vitc.artifacts.checkpoint_meta import checkpoint_model
    from vitc.downloads import HF_WEIGHT_FILES, model_named_by

    file = next((path / name for name in HF_WEIGHT_FILES if (path / name).is_file()), None)
    if file is None or manifest_paths(path):
        return None
    if checkpoint_model(file) is not None:
        return {**_describe_safetensors(file), "file": str(file)}
    if not (path / CONFIG).is_file():
        return None
    named = model_named_by(path)
    holds = f", holding {named}" if named else ""
    raise VitcError(
        f"{path} is a Hugging Face/timm model folder ({CONFIG} and {file.name}{holds}), not a vitc artifact: "
        f"convert it with `vitc import {path} --out weights/<name>`, "
        f"or fine-tune it with `vitc train --pretrained {path}`"
    )


def _describe_safetensors(path: Path) -> dict[str, Any]:
    """A vitc checkpoint, or the resume file of a run (`vitc train --resume` reads it)."""
    from dataclasses import asdict

    from vitc.artifacts.resume import resume_summary
    from vitc.checkpoint import read_meta

    summary = resume_summary(path)
    if summary is None:
        return {"kind": "vitc checkpoint", **read_meta(path).to_record()}
    within = ", this file the newest weights (stopped within an epoch)" if summary.step_in_epoch else ""
    hint = (
        f"{summary.next_step(str(path.parent))}; best/last.safetensors hold "
        f"the weights of the epochs it finished{within}"
    )
    return {"kind": "vitc resume state", **asdict(summary), "note": hint}


def _unfinished(run: Path) -> dict[str, Any]:
    """A run folder stopped before its last epoch (Ctrl-C, a kill): where `--resume` goes on, else nothing."""
    from vitc.artifacts.resume import resume_summary

    state = RunLayout(run).resume
    summary = resume_summary(state) if state.is_file() else None
    if summary is None or not summary.unfinished:
        return {}
    return {"run": f"unfinished: `vitc train --resume {run}` continues it at {summary.where()}"}


def _describe_program(path: Path) -> dict[str, Any]:
    """A torch.export program from `vitc compile --out`: the record saved inside it (zip read, no torch)."""
    from vitc.artifacts.program import read_program_record

    record = read_program_record(path)
    compiled = record.get("compile") or {}  # none: a program of a model compile_model did not rewrite
    prep = record.get("preprocess") if isinstance(record.get("preprocess"), dict) else {}
    return {
        "kind": "torch.export program",
        "model": record.get("model"),
        "args": record.get("args"),
        "input_size": record.get("input_size"),
        "class_names": record.get("class_names"),
        "mean": prep.get("mean", record.get("mean")),  # programs of this release write them in preprocess only
        "std": prep.get("std", record.get("std")),
        "preprocess": record.get("preprocess"),
        "target": compiled.get("target"),
        "passes": compiled.get("rows"),
        "max_abs_diff": compiled.get("max_abs_diff"),
        "export": record.get("export"),
        "note": "torch.export.load(path).module() runs it; load programs only from sources you trust",
    }


def _describe_onnx(path: Path) -> dict[str, Any]:
    from vitc._lazy import lazy_import
    from vitc.artifacts import manifest_for
    from vitc.export.onnx_export import read_onnx

    onnx = lazy_import("onnx")
    model = read_onnx(path, external_data=False)

    def io(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                "elem_type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
            }
            for v in values
        ]

    manifest = manifest_for(path)
    return {
        "kind": "onnx",
        "ir_version": model.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "metadata": {p.key: _decoded(p.value) for p in model.metadata_props},
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "nodes": len(model.graph.node),
        "manifest": None if manifest is None else str(manifest.path),
    }


def _decoded(text: str) -> Any:
    """vitc stores each ONNX metadata value as JSON; anything else stays the string it is."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _text(value: Any, nested: bool = False) -> str:
    """One cell: scalars plain, lists comma-separated (long ones shortened), records as k=v."""
    if value is None or value in ({}, []):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        text = " ".join(f"{k}={_text(v, True)}" for k, v in value.items())
        return f"{{{text}}}" if nested else text
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value) and not nested:
            return "\n".join(_text(v) for v in value)
        shown = ", ".join(_text(v, True) for v in value[:LIST_SHOWN])
        text = shown if len(value) <= LIST_SHOWN else f"{shown}, … ({len(value)} items)"
        return f"[{text}]" if nested else text
    return printable(str(value))  # a class name or path from the file: a newline in it stays visible, in one row


def rows(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(field, text) pairs. A top-level record, or a nested one that holds records, becomes one row
    per field (`metadata.model`, `extra.train_config.optim`); a flat nested one is one `k=v` row."""
    out: list[tuple[str, str]] = []
    for key, value in record.items():
        if key == "kind" and not prefix:
            continue
        holds_records = isinstance(value, dict) and any(isinstance(v, dict) and v for v in value.values())
        if isinstance(value, dict) and value and (not prefix or holds_records):
            out.extend(rows(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", _text(value)))
    return out


def _tensorrt(export: dict[str, Any]) -> str:
    """The TensorRT an export's record is for: its `trt_target`, or for one made without --trt the oldest that
    parses it, in words. One wording for a folder's table and one manifest's (which said "trt_target -")."""
    from vitc.export.trt_rules import untargeted

    report = export.get("precision_report") or {}
    return str(export.get("trt_target") or untargeted(export.get("opset"), report.get("weights") == "int8"))


def _exports_table(record: dict[str, Any]) -> Fitted:
    """Several exports of one folder, one row per precision: names fold, figures stay whole at any width."""
    table = Table(title=f"{record['folder']} ({len(record['exports'])} exports)")
    columns: tuple[str, ...] = ("precision", "file", "sha256", "model", "batch", "io", "opset", "TensorRT")
    columns += ("top-1", "Δ top-1", "agreement", "max |Δ|")  # the drift the manifest recorded
    for column in columns:
        if column in ("precision", "file", "sha256", "model", "io", "TensorRT"):
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for precision, raw in record["exports"].items():
        drift = raw.get("drift") or {}
        batch = raw.get("batch") or {}
        report = raw.get("precision_report") or {}
        base = report.get("high_precision_dtype")  # int8: what is not quantized
        table.add_row(
            f"{precision} ({base} base)" if base else precision,
            f"model.{precision}.onnx",
            str(raw.get("onnx_file")),  # the file the manifest records: ok, sha256 differs, missing, no sha256
            str(raw.get("model")),
            f"{batch.get('min')}:{batch.get('opt')}:{batch.get('max')}",
            str(raw.get("io_dtype")),
            str(raw.get("opset")),
            _tensorrt(raw),
            "-" if drift.get("top1") is None else f"{drift['top1']:.2f}%",  # None: agreement-only export
            "-" if drift.get("delta_top1") is None else f"{drift['delta_top1']:+.2f}",
            "-" if drift.get("agreement") is None else f"{drift['agreement']:.1f}%",
            "-" if drift.get("max_abs_diff") is None else f"{drift['max_abs_diff']:.2e}",
        )
    return Fitted(table)


def info(
    artifact: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint, run folder, resume file, ONNX file, export folder or its held-out set (.npz), .plan, "
            "vitc's JSON report, or a run's summary.json, config.json, metrics.jsonl or index.json."
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show an artifact's metadata without loading it into a framework."""
    record, refusal = _described(artifact)
    _show(artifact, record, json_out)
    if refusal is not None:  # after the table, which says which file differs or is missing
        raise refusal


def _show(artifact: Path, record: dict[str, Any], json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    console = plain_console()
    if record["kind"] == "vitc exports":
        console.print(_exports_table(record))
        console.print("`vitc info FOLDER/manifest.<precision>.json` shows one of them in full", highlight=False)
        return
    if record["kind"] == "vitc export":  # the JSON keeps the manifest's own trt_target (null: made without --trt)
        record = {**record, "trt_target": _tensorrt(record)}
    table = Table(title=f"{artifact} ({record['kind']})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, text in rows(record):
        table.add_row(key, text)
    console.print(table)
