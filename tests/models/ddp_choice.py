"""One of two gloo processes for tests/models/test_formulation.py: `python ddp_choice.py RANK STORE OUT`.

Rank 0 "measures" (its pick is forced to fused_dense, so the outcome does not depend on timing);
rank 1 must take rank 0's choice without measuring anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import vitc.models.formulation
import vitc.train.device
from vitc.models import create_model
from vitc.models.convit import GPSA
from vitc.train.distributed import DistInfo, leave_process_group


def must_not_measure(*args: object, **kwargs: object) -> None:
    raise AssertionError("a process other than the main one measured")


def main(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    info = DistInfo(rank=rank, world_size=2)
    try:
        vitc.train.device.TUNED_DEVICES = ("cpu",)  # the CPU stands in for a GPU
        if rank == 1:
            vitc.models.formulation.choose_formulations = must_not_measure
        else:
            vitc.models.formulation.pick = lambda trials: "fused_dense"
        torch.manual_seed(0)
        model = create_model("convit_micro", depth=2, local_up_to_layer=1, img_size=40)
        lines: list[str] = []
        cast = torch.autocast("cpu", enabled=False)
        record = vitc.train.device.choose_attention(model, False, 2, cast, lines.append, info)
        chosen = [m.attn_impl for m in model.modules() if isinstance(m, GPSA)]
        Path(out, f"rank{rank}.json").write_text(json.dumps({"chosen": chosen, "record": record, "lines": lines}))
    finally:
        leave_process_group()  # not dist.destroy_process_group(), which could hang on torch 2.4-2.7 (it did on 2.5.1)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
