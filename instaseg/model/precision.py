"""The numeric precision a model computes in: :func:`resolve_precision` decides it (with a reason people can
read), :func:`autocast` runs a torchvision Mask R-CNN in it with coordinates kept in float32.

Mixed precision is ``torch.autocast``: weights, checkpoints and optimizer state stay float32 (a model that
only predicts keeps its convolution and linear weights in bf16, :func:`cast_layer_weights`); inside the
context the ops on autocast's lower-precision list run in bf16 (or fp16) and those on its float32 list in
float32. On the CPU (torch 2.14, torchvision 0.29), for a Mask R-CNN:

- **bf16**: ``conv2d``, ``conv_transpose2d``, ``linear``, ``matmul``/``mm``/``bmm``/``addmm`` (autocast's
  list), and what follows them on bf16 tensors (ReLU, max-pool, nearest upsampling of the FPN, GroupNorm,
  BatchNorm, sigmoid, top-k): the backbone, FPN, RPN head and the box and mask heads.
- **float32 by autocast**: the losses (``cross_entropy``, ``binary_cross_entropy_with_logits``,
  ``smooth_l1_loss``, ``l1_loss``); torchvision casts ``roi_align`` and ``nms`` inputs to float32 (the RoI
  features come back as bf16). On the CPU instaseg's RoIAlign (:mod:`~instaseg.model.gather_roi_align`)
  sums in float32 too: from float32 copies of the maps in training, from the bf16 maps themselves (with
  bf16 bilinear weights) when predicting; the RoI features come back as bf16.
- **float32 here**: :func:`autocast` casts the outputs of the three layers whose outputs become
  coordinates, scores or masks (``rpn.head``, ``roi_heads.box_predictor``, ``roi_heads.mask_predictor``)
  to float32 with forward hooks. Without that, torchvision's ``BoxCoder.decode`` casts the anchors and
  proposals to the deltas' dtype: bf16 has an 8-bit mantissa, so a coordinate near 500 px would be rounded
  to 2-4 px. So box decoding, clipping, NMS, score thresholds, mask probabilities (and the mask pasting
  after them) and all losses are float32, and the engines' outputs are float32.

Native bf16 means the CPU multiplies bf16 in hardware: Intel AMX (``amx_bf16``, Sapphire Rapids and later)
or AVX512-BF16 (``avx512_bf16``: Cooper Lake, AMD Zen 4 and later). Without it oneDNN emulates bf16, which is
far slower than float32 (measured on a 2-core AMD EPYC Zen 3 (AVX2): a ResNet-18 forward 0.30 s in float32,
10.1 s in bf16 autocast), so ``auto`` chooses float32 there and an explicit ``bf16`` runs with a warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .config import PRECISIONS, check_choice
from .cpu_features import CPUINFO, NATIVE_BF16_FLAGS, NATIVE_FP16_FLAGS, read_cpu_flags

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What runs: ``name`` ``"fp32"``, ``"bf16"`` or ``"fp16"`` on ``device_type`` (``"cpu"``, ``"cuda"``...),
    and ``reason``, one line saying why (for logs and ``--help``)."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for float32 (no autocast)."""
        return _DTYPES.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
        return self.name == "fp16"


def onednn_bf16_supported() -> bool:
    """torch's own report (oneDNN's ISA check) that it can run bf16 convolutions and matmuls on this CPU.
    True on any AVX-512 CPU, where bf16 is emulated: on its own it does not mean native bf16."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_report(flags: frozenset[str] | None, native: tuple[str, ...]) -> tuple[list[str], str]:
    """The native flags found, and a description of where they were looked for."""
    if flags is None:
        return (
            [],
            f"the CPU flags could not be read ({CPUINFO} absent), so none of {', '.join(native)} is assumed",
        )
    found = [f for f in native if f in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    if found:
        return found, f"{', '.join(found)} in {CPUINFO} flags; torch CPU capability {capability}"
    return found, f"none of {', '.join(native)} in {CPUINFO} flags; torch CPU capability {capability}"


def _resolve_cpu(requested: str, flags: frozenset[str] | None, onednn_bf16: bool | None) -> Precision:
    if requested == "fp32":
        return Precision("fp32", "cpu", "fp32 (as asked): bf16 is off because --precision fp32 was given")
    if requested in ("auto", "bf16"):
        found, where = _cpu_report(flags, NATIVE_BF16_FLAGS)
        onednn = onednn_bf16_supported() if onednn_bf16 is None else onednn_bf16
        native = bool(found) and onednn
        if native:
            how = "auto" if requested == "auto" else "as asked"
            return Precision("bf16", "cpu", f"bf16 autocast ({how}): this CPU has native bf16 ({where})")
        if found:  # the CPU has it, this torch's oneDNN does not use it
            where += "; but this torch build's oneDNN reports no bf16 support"
        if requested == "auto":
            return Precision(
                "fp32", "cpu", f"fp32 (auto): bf16 is off, this CPU has no native bf16 ({where})"
            )
        return _slow("bf16", where)
    found, where = _cpu_report(flags, NATIVE_FP16_FLAGS)  # explicit fp16
    if found:
        return Precision("fp16", "cpu", f"fp16 autocast (as asked): this CPU has native fp16 ({where})")
    return _slow("fp16", where)


def _slow(name: str, where: str) -> Precision:
    """An explicit bf16/fp16 on a CPU that emulates it: allowed (e.g. to check accuracy anywhere), but slow."""
    reason = (
        f"{name} autocast (as asked), although this CPU has no native {name} ({where}): it is emulated and "
        f"much slower than fp32 (5x to 30x on an AVX2 CPU); use --precision auto or fp32 for speed"
    )
    warnings.warn(reason, stacklevel=4)  # points at the caller of resolve_precision
    return Precision(name, "cpu", reason)


def resolve_precision(
    requested: str,
    device: torch.device | str,
    cpu_flags: Iterable[str] | None = None,
    onednn_bf16: bool | None = None,
) -> Precision:
    """What runs for ``requested`` (one of :data:`~instaseg.model.config.PRECISIONS`) on ``device``.

    - CPU: ``auto`` is bf16 autocast when the CPU has native bf16 (one of :data:`NATIVE_BF16_FLAGS` in its
      flags **and** torch's oneDNN reports bf16 support), else fp32. An explicit ``bf16``/``fp16`` on a CPU
      without it runs with a ``UserWarning`` (emulated, far slower).
    - CUDA: ``auto`` is fp16 autocast with gradient scaling (the mixed precision training used before);
      ``bf16`` needs a GPU with bf16 (compute capability 8.0+).
    - MPS and other devices: fp32 only.

    Args:
        cpu_flags: the CPU's flags (e.g. ``{"avx2", "fma"}`` for a CPU without bf16); ``None`` reads this
            machine's with :func:`read_cpu_flags`.
        onednn_bf16: torch's oneDNN bf16 report; ``None`` asks torch (:func:`onednn_bf16_supported`).

    Raises:
        ValueError: an unknown name (listing the valid ones), or a precision the device cannot run.
    """
    check_choice("precision", requested, PRECISIONS)
    device = torch.device(device)
    if device.type == "cpu":
        flags = read_cpu_flags() if cpu_flags is None else frozenset(cpu_flags)
        return _resolve_cpu(requested, flags, onednn_bf16)
    if device.type == "cuda":
        if requested == "fp32":
            return Precision("fp32", "cuda", "fp32 (as asked)")
        if requested == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ValueError(
                    "--precision bf16: this GPU has no bf16 (it needs compute capability 8.0+); use auto or fp16"
                )
            return Precision("bf16", "cuda", "bf16 autocast (as asked) on CUDA")
        how = "auto" if requested == "auto" else "as asked"
        return Precision("fp16", "cuda", f"fp16 autocast with gradient scaling ({how}): CUDA mixed precision")
    if requested not in ("auto", "fp32"):
        raise ValueError(f"--precision {requested}: only fp32 runs on {device.type}; use auto or fp32")
    return Precision(
        "fp32", device.type, f"fp32 ({'auto' if requested == 'auto' else 'as asked'}): {device.type}"
    )


def _outputs_to_float32(module: nn.Module, inputs, output):
    """Forward hook: the module's floating-point outputs (a tensor, or lists/tuples of them) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, list | tuple):
        return type(output)(_outputs_to_float32(module, inputs, o) for o in output)
    return output


def coordinate_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of a torchvision Mask R-CNN (or a wrapper with ``.module``, e.g. DDP) whose outputs become
    boxes, scores and mask probabilities: the RPN head, the box predictor and the mask predictor."""
    model = getattr(model, "module", model)
    heads = model.roi_heads
    return [m for m in (model.rpn.head, heads.box_predictor, getattr(heads, "mask_predictor", None)) if m]


@contextlib.contextmanager
def autocast(model: nn.Module, precision: Precision | None) -> Iterator[None]:
    """Run ``model``'s forward passes inside the block in ``precision`` (nothing changes for fp32 or ``None``).

    bf16/fp16: ``torch.autocast`` on the precision's device, with the outputs of :func:`coordinate_layers`
    cast to float32 (hooks removed on exit), so that boxes, scores, masks and losses are float32. Run the
    backward pass after the block, as torch recommends.
    """
    if precision is None or precision.dtype is None:
        yield
        return
    handles = [layer.register_forward_hook(_outputs_to_float32) for layer in coordinate_layers(model)]
    try:
        with torch.autocast(precision.device_type, dtype=precision.dtype):
            yield
    finally:
        for handle in handles:
            handle.remove()


# The layers whose ops autocast runs in its lower precision on the CPU and CUDA: conv2d, conv_transpose2d, linear.
_AUTOCAST_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def cast_layer_weights(model: nn.Module, precision: Precision | None) -> int:
    """Store the weights and biases of ``model``'s convolutions and linear layers in ``precision``'s dtype,
    for a model that only predicts (a :class:`~instaseg.model.predictor.Predictor` loaded from a file).

    Autocast converts a float32 weight to bf16 on every forward pass (its cache lives only inside one
    autocast block): the 39 layers of the light model on every image, ~9 % of a prediction on a 2-core
    Zen 4. Converted once here, the same bf16 numbers are used, so the outputs do not change. Normalisation
    layers keep their float32 parameters (autocast does not convert them either). The model must then run under
    :func:`autocast` with the same precision (a float32 input would meet a bf16 weight); do not train it.
    Nothing changes for fp32 or ``None``. Returns the number of layers converted.
    """
    if precision is None or precision.dtype is None:
        return 0
    layers = [m for m in model.modules() if isinstance(m, _AUTOCAST_LAYERS)]
    for layer in layers:
        for name in ("weight", "bias"):
            parameter = getattr(layer, name)
            if parameter is not None:
                parameter.data = parameter.data.to(precision.dtype)
    return len(layers)
