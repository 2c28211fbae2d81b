"""Leaving the process group after a collective whose tensors Python has already dropped.

On torch 2.4.1, 2.5.1 and 2.6.0 (before pytorch#154976, torch 2.8) dist.destroy_process_group() joined gloo's
worker threads holding the GIL, while the worker that was freeing the collective's tensors waited for the GIL
to drop their Python objects: both processes hung for ever. By chance after a whole DDP run on 2.5.1 (after
its summary: the launcher, rank 0 and rank 1 waited), and every time in the two processes here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import processes

# `python -c SCRIPT RANK STORE`: an all-reduce still running when its tensor's last Python reference goes
LEAVER = """
import sys
import torch
import torch.distributed as dist
from vitc.train.distributed import leave_process_group
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method=f"file://{sys.argv[2]}", rank=rank, world_size=2)
dist.all_reduce(torch.ones(1000))
work = dist.all_reduce(torch.ones(1000), async_op=True)
del work
leave_process_group()
print("left", flush=True)
"""


def test_leaving_the_group_just_after_a_collective_does_not_hang(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    procs = [
        processes.popen([sys.executable, "-c", LEAVER, str(rank), store], stdout=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    with processes.killed_on_exit(*procs):  # hung, each is killed after the timeout
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert [out.splitlines()[-1:] for out in outputs] == [["left"], ["left"]]  # gloo 2.8 says "[Gloo] Rank 0 is …"
