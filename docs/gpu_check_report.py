"""gpu_check.md from the result docs/gpu_check.py writes to gpu_check.json: one part per section.

Every key but a section's status may be missing (a sub-run stopped, failed or not reached yet): the
parts read them with .get, so a partial result still renders.
"""

from __future__ import annotations

from typing import Any

NOT_LISTED = ("reason", "traceback")  # the reason heads the part; the traceback stays in gpu_check.json
SHOWN = ("ok", "partial", "failed", "running", "killed")  # each shows the sub-runs it finished, and why others failed


def markdown(result: dict[str, Any]) -> str:
    lines = ["# vitc GPU check" + (" (dry run on CPU: plumbing only, no GPU figures)" if result.get("dry_run") else ""),
             "", f"Total {result.get('seconds', '?')} s. Produced by `make gpu-check` (docs/gpu_check.py).",
             ""]  # fmt: skip
    if result.get("killed"):
        lines += [f"**{result['killed']}**: what follows is what was measured before.", ""]
    for name, section in result.get("sections", {}).items():
        status = section.get("status", "?")
        lines += [f"## {name}: {status}", ""]
        if section.get("reason"):
            lines += [section["reason"], ""]
        if status not in SHOWN:
            continue
        if name == "environment":
            lines += [f"- {k}: {v}" for k, v in section.items() if k not in ("status", "seconds", *NOT_LISTED)]
            lines += [""]
        elif name in ("torch_bench", "inference", "train_ratios", "peers"):
            for title, part in section.items():
                if isinstance(part, dict):
                    lines += _part(title, part)
        elif name == "train":
            lines += _train(section)
        else:
            lines += [f"- {k}: {v}" for k, v in section.items() if k not in ("status", "tail", *NOT_LISTED)]
            lines += [""]
    return "\n".join(lines) + "\n"


def _part(title: str, part: dict[str, Any]) -> list[str]:
    """One sub-run: its command, why it stopped or failed, what it measured."""
    lines = [f"### {title}", ""]
    if part.get("command"):
        lines += [f"`{part['command']}`", ""]
    for key in ("skipped", "failed"):
        if part.get(key):
            lines += [f"{key}: {part[key]}", ""]
    for key in ("stderr_tail", "traceback"):
        if part.get(key):
            lines += ["```", *part[key], "```", ""]
    if part.get("markdown"):
        lines += [part["markdown"], ""]
    if part.get("operators"):  # peers --ops: where vitc's step launches other kernels than timm's
        lines += ["```", *part["operators"], "```", ""]
    return lines


def _train(section: dict[str, Any]) -> list[str]:
    lines = [f"Settings: {', '.join(section.get('settings', []))}", "",
             "| model | AMP | train img/s | step img/s | data wait | warm-up s | eval s | s | attention |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in section.get("rows", []):
        wait = r.get("data_wait_fraction")
        rate = r.get("train_images_per_s", r.get("skipped") or f"failed: {r.get('failed')}")
        lines += [
            f"| {r.get('model')} | {r.get('amp')} | {rate} | "
            f"{r.get('train_step_images_per_s') or '—'} | {'—' if wait is None else f'{wait:.1%}'} | "
            f"{r.get('warmup_seconds', '')} | {r.get('eval_seconds', '')} | {r.get('seconds', '')} | "
            f"{', '.join(r.get('attention') or []) or '—'} |"
        ]
    lines += [
        "",
        "train img/s: the epochs' images over their wall time; step img/s: the steps after the "
        "first alone; data wait: the device's wait between steps (vitc.train.meter); attention: "
        "the GPSA/SP-SA formulation vitc train chose per block kind (vitc.models.formulation)",
        "",
    ]
    if "feed_timing" in section:
        feed = section["feed_timing"]
        table = feed.get("markdown", feed.get("error", ""))
        lines += [f"Worker thread or not (`{feed.get('command')}`):", "", table, ""]
    if "feed_tests" in section:
        lines += [
            f"Feed tests on the GPU (`pytest -k cuda tests/train/test_feed_overlap.py "
            f"tests/data/test_colour_on_device.py`): {section['feed_tests']}",
            "",
        ]
    return lines
