"""gpu_check.md from the result docs/gpu_check.py writes to gpu_check.json: one part per section."""

from __future__ import annotations

from typing import Any


def markdown(result: dict[str, Any]) -> str:
    lines = ["# vitc GPU check" + (" (dry run on CPU: plumbing only, no GPU figures)" if result["dry_run"] else ""),
             "", f"Total {result['seconds']} s. Produced by `make gpu-check` (docs/gpu_check.py).", ""]  # fmt: skip
    for name, section in result["sections"].items():
        lines += [f"## {name}: {section['status']}", ""]
        if section["status"] != "ok":
            lines += [section.get("reason", ""), ""]
            continue
        if name == "environment":
            lines += [f"- {k}: {v}" for k, v in section.items() if k not in ("status", "seconds")] + [""]
        elif name in ("torch_bench", "inference", "train_ratios", "peers"):
            for precision, part in section.items():
                if isinstance(part, dict):
                    lines += [f"### {precision}", ""]
                    lines += (
                        [f"`{part['command']}`", "", part["markdown"], ""]
                        if "markdown" in part
                        else [part["skipped"], ""]
                    )
                    if part.get("operators"):  # peers --ops: where vitc's step launches other kernels than timm's
                        lines += ["```", *part["operators"], "```", ""]
        elif name == "train":
            lines += [f"Settings: {', '.join(section['settings'])}", "",
                      "| model | AMP | train img/s | step img/s | data wait | warm-up s | eval s | s | attention |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
            for r in section["rows"]:
                wait = r.get("data_wait_fraction")
                lines += [
                    f"| {r['model']} | {r['amp']} | {r.get('train_images_per_s', r.get('skipped'))} | "
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
                table = feed.get("markdown", feed.get("error"))
                lines += [f"Worker thread or not (`{feed['command']}`):", "", table, ""]
            if "feed_tests" in section:
                lines += [
                    f"Feed tests on the GPU (`pytest -k cuda tests/train/test_feed_overlap.py "
                    f"tests/data/test_colour_on_device.py`): "
                    f"{section['feed_tests']}",
                    "",
                ]
        else:
            lines += [f"- {k}: {v}" for k, v in section.items() if k not in ("status", "tail")] + [""]
    return "\n".join(lines) + "\n"
