"""instaseg.model.vision: torchvision imported without TorchDynamo, and TorchDynamo still whole afterwards."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import sys
from instaseg.model.checkpoint import load_checkpoint
from tests.checkpoints import save_light_checkpoint
path = save_light_checkpoint(sys.argv[1], ["nucleus"], 128)
load_checkpoint(path, "cpu")
print("loaded without dynamo:", "torch._dynamo" not in sys.modules)
import torch
roi_align_module = sys.modules["torchvision.ops.roi_align"]  # torchvision.ops.roi_align is the function
print("stand-in delegates:", roi_align_module.is_compile_supported("cpu") in (True, False))
import torch._dynamo
print("real dynamo:", hasattr(torch._dynamo, "optimize") and hasattr(torch._dynamo.utils, "counters"))
print("compiles:", torch.compile(lambda x: x + 1, backend="eager")(torch.zeros(2)).tolist() == [1.0, 1.0])
"""


def test_torchvision_without_dynamo_then_the_real_dynamo(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "light.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines == [
        "loaded without dynamo: True",
        "stand-in delegates: True",
        "real dynamo: True",
        "compiles: True",
    ], done.stdout
