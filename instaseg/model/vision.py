"""torchvision, imported without TorchDynamo: about 1 s less at the start of every command.

torchvision 0.29's ``ops/roi_align.py`` imports ``is_compile_supported`` from ``torch._dynamo.utils``, and that
loads all of TorchDynamo (and sympy): about 1.0 of the 1.1 s ``import torchvision`` takes on a 2-core EPYC,
before any work. torchvision calls the function only when its compiled ops are missing (or are not
deterministic on CUDA). Importing this module imports torchvision with a stand-in ``torch._dynamo.utils``
whose ``is_compile_supported`` loads the real one when it is first called, then removes the stand-in, so
that a later ``import torch._dynamo`` (``torch.compile``, ONNX export) loads the real TorchDynamo.

Nothing is stood in when TorchDynamo or torchvision is already loaded. If torchvision wants more of
TorchDynamo than the stand-in has (another release), its partial import is undone and it is imported the
ordinary way. The modules of :mod:`instaseg.model` that use torchvision import this module first.
"""

from __future__ import annotations

import sys
import types

import torch

_DYNAMO, _UTILS = "torch._dynamo", "torch._dynamo.utils"


def _is_compile_supported(device_type) -> bool:
    """``torch._dynamo.utils.is_compile_supported``, loaded on first use."""
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def _stand_ins() -> dict[str, types.ModuleType]:
    package = types.ModuleType(_DYNAMO, "stand-in while torchvision is imported (instaseg.model.vision)")
    package.__path__ = []
    utils = types.ModuleType(_UTILS)
    utils.is_compile_supported = _is_compile_supported
    package.utils = utils
    return {_DYNAMO: package, _UTILS: utils}


def import_torchvision() -> types.ModuleType:
    """``import torchvision`` (and its detection models), without loading TorchDynamo when that can be
    avoided; returns the module."""
    if "torchvision" in sys.modules or _DYNAMO in sys.modules:
        import torchvision.models.detection

        return sys.modules["torchvision"]
    stand_ins = _stand_ins()
    sys.modules.update(stand_ins)
    try:
        import torchvision.models.detection  # noqa: F401 - everything instaseg uses, under the stand-in
    except Exception:  # this torchvision needs the real TorchDynamo: undo and import it the ordinary way
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _remove(stand_ins)
        import torchvision.models.detection  # noqa: F401
    finally:
        _remove(stand_ins)
    return sys.modules["torchvision"]


def _remove(stand_ins: dict[str, types.ModuleType]) -> None:
    for name, module in stand_ins.items():
        if sys.modules.get(name) is module:
            del sys.modules[name]
    if torch.__dict__.get("_dynamo") is stand_ins[_DYNAMO]:  # torch's lazy attribute, if it was read
        del torch._dynamo


torchvision = import_torchvision()
