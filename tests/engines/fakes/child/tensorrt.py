"""`import tensorrt` in a child process vitc starts (the TensorRT 8.5 build, vitc.build.trt_child): the fake of
the release `install_tensorrt` installed in the parent, as VITC_TEST_FAKE_TENSORRT describes it, logging into
the parent's `trt._log` (a file). install_tensorrt puts this folder on sys.path, which the child is given."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from tests.engines.fakes.cuda_fakes import FakeGpu
from tests.engines.fakes.tensorrt_fake import CHILD_ENV, FileLog, make_tensorrt

_spec = json.loads(os.environ[CHILD_ENV])
_trt = make_tensorrt(_spec["version"], FakeGpu(_spec["driver"], _spec["name"], tuple(_spec["cc"])), _spec["dla_cores"])
_trt._log = FileLog(_spec["log"])
if _spec.get("killed_while_building"):  # a test's OOM killer: SIGKILL in the middle of the build

    def _killed(self: Any, network: Any, config: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    type.__setattr__(_trt.Builder, "build_serialized_network", _killed)
sys.modules[__name__] = _trt
