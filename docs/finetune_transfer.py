"""Fine-tuning transfer on digits, as tests/train/test_finetune.py runs it, with the figures printed.

deit_micro (2 blocks, width 48, 16x16) is pretrained on digits 0-4, then trained on digits 5-9 from
10 images per class for 50 steps, once from scratch and once from the 0-4 weights (same budget).

    python docs/finetune_transfer.py 1   # threads
    python docs/finetune_transfer.py 2

`--fitted` compares, from the same 0-4 weights on 119 images of 5-9 (fraction 0.19) for 30 epochs,
the fine-tuning recipes' former fixed knobs (batch 64, lr 1e-4, warm-up 1, layer decay 0.75: one
step an epoch) with the defaults `vitc train --pretrained` now fits to the data size:

    python docs/finetune_transfer.py 1 --fitted
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


FORMER_RECIPE = {"optim.batch_size": 64, "optim.lr": 1e-4, "optim.min_lr": 1e-6, "optim.warmup_epochs": 1}
FITTED_DATA = {"data.fraction": 0.19, "optim.epochs": 30, "optim.layer_decay": 0.75}  # 119 images of 5-9


def main() -> None:
    test = importlib.import_module("tests.train.test_finetune")
    args = [a for a in sys.argv[1:] if a != "--fitted"]
    threads = int(args[0]) if args else torch.get_num_threads()
    torch.set_num_threads(threads)
    out = Path(tempfile.mkdtemp())
    with pytest.MonkeyPatch.context() as patch:
        pretrain = {"optim.epochs": 20, "optim.batch_size": 32, "optim.lr": 2e-3}  # the test's `pretrained` fixture
        pre = test._train(patch, test.LOWER, out, "lower", **pretrain)
    if "--fitted" in sys.argv:
        fitted(test, out, str(pre.run_dir / "best.safetensors"), threads)
        return
    with pytest.MonkeyPatch.context() as patch:
        scratch = test._train(patch, test.UPPER, out, "scratch", **test.FEW_SHOT)
    weights = str(pre.run_dir / "best.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        tuned = test._train(patch, test.UPPER, out, "tuned", **test.FEW_SHOT, **{"model.pretrained": weights})
    print(
        f"threads {threads}: pretrained on 0-4 {pre.test['top1']:.1f}%; on 5-9 from scratch "
        f"{scratch.test['top1']:.1f}%, fine-tuned {tuned.test['top1']:.1f}%"
    )


def fitted(test: object, out: Path, weights: str, threads: int) -> None:
    """The former recipe's fixed knobs vs the fitted defaults (SMALL's warm-up dropped, so it is fitted too)."""
    import json

    runs = {}
    for name, knobs in (("former", FORMER_RECIPE), ("fitted", {})):
        with pytest.MonkeyPatch.context() as patch:
            patch.delitem(test.SMALL, "optim.warmup_epochs")
            run = test._train(patch, test.UPPER, out, name, **FITTED_DATA, **knobs, **{"model.pretrained": weights})
        optim = json.loads((run.run_dir / "config.json").read_text())["optim"]
        runs[name] = f"batch {optim['batch_size']}, lr {optim['lr']:.2g}: {run.test['top1']:.1f}%"
    print(f"threads {threads}, 119 images of 5-9, 30 epochs: former recipe {runs['former']}; fitted {runs['fitted']}")


if __name__ == "__main__":
    main()
