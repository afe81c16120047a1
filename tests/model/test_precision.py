"""The precision resolver (CPU flags faked by argument), the autocast hooks that keep coordinates float32."""

from __future__ import annotations

import warnings

import pytest
import torch

from instaseg.cli import main
from instaseg.model import cpu_features
from instaseg.model import precision as precision_module
from instaseg.model.architectures import build_model
from instaseg.model.config import ModelConfig
from instaseg.model.cpu_features import NATIVE_BF16_FLAGS, describe_auto_precision, read_cpu_flags
from instaseg.model.precision import autocast, coordinate_layers, resolve_precision

ZEN3 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})  # an AVX2 CPU without bf16
SAPPHIRE_RAPIDS = ZEN3 | {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_a_cpu_without_native_bf16_runs_fp32_and_says_why():
    chosen = resolve_precision("auto", "cpu", cpu_flags=ZEN3, onednn_bf16=False)
    assert chosen.name == "fp32" and chosen.dtype is None
    assert "bf16 is off" in chosen.reason and "no native bf16" in chosen.reason
    assert "amx_bf16" in chosen.reason and "avx512_bf16" in chosen.reason  # which flags were looked for


def test_a_cpu_with_amx_runs_bf16_when_onednn_agrees():
    chosen = resolve_precision("auto", "cpu", cpu_flags=SAPPHIRE_RAPIDS, onednn_bf16=True)
    assert chosen.name == "bf16" and chosen.dtype is torch.bfloat16 and not chosen.needs_grad_scaler
    assert "amx_bf16" in chosen.reason and "native bf16" in chosen.reason
    # the flags alone are not enough: a torch whose oneDNN cannot run bf16 stays in fp32
    refused = resolve_precision("auto", "cpu", cpu_flags=SAPPHIRE_RAPIDS, onednn_bf16=False)
    assert refused.name == "fp32" and "oneDNN reports no bf16" in refused.reason


def test_auto_on_this_machine_follows_its_own_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    native = any(flag in flags for flag in NATIVE_BF16_FLAGS)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == ("bf16" if native and precision_module.onednn_bf16_supported() else "fp32")
    assert "/proc/cpuinfo" in chosen.reason


def test_unreadable_flags_mean_fp32(monkeypatch, tmp_path):
    assert read_cpu_flags(tmp_path / "absent") is None
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nflags : other\n")
    assert read_cpu_flags(tmp_path / "cpuinfo") == {"fpu", "avx2", "amx_bf16"}
    monkeypatch.setattr(precision_module, "read_cpu_flags", lambda: None)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == "fp32" and "could not be read" in chosen.reason


def test_explicit_choices():
    fp32 = resolve_precision("fp32", "cpu", cpu_flags=SAPPHIRE_RAPIDS, onednn_bf16=True)
    assert fp32.name == "fp32" and fp32.dtype is None and "bf16 is off" in fp32.reason
    with pytest.warns(UserWarning, match="emulated"):
        forced = resolve_precision("bf16", "cpu", cpu_flags=ZEN3, onednn_bf16=False)
    assert forced.name == "bf16" and "no native bf16" in forced.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        assert resolve_precision("bf16", "cpu", cpu_flags=SAPPHIRE_RAPIDS, onednn_bf16=True).name == "bf16"
    with pytest.warns(UserWarning):
        assert resolve_precision("fp16", "cpu", cpu_flags=ZEN3).needs_grad_scaler
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="only fp32 runs on mps"):
        resolve_precision("bf16", "mps")
    assert resolve_precision("auto", "mps").name == "fp32"


@pytest.fixture(scope="module")
def light_model():
    torch.manual_seed(0)
    config = ModelConfig(
        arch="maskrcnn_resnet18_fpn", num_classes=1, image_size=64, pretrained_backbone=False
    )
    return build_model(config).eval()


def test_autocast_keeps_the_coordinate_layers_float32_and_cleans_up(light_model):
    bf16 = resolve_precision("bf16", "cpu", cpu_flags=SAPPHIRE_RAPIDS, onednn_bf16=True)
    rpn_head = light_model.rpn.head
    features = [torch.rand(1, 128, 16, 16)]
    with torch.no_grad(), autocast(light_model, bf16):
        inner = light_model.backbone.fpn.inner_blocks[0](torch.rand(1, 64, 16, 16))
        objectness, deltas = rpn_head(features)
        scores, boxes = light_model.roi_heads.box_predictor(torch.rand(3, 256))
    assert inner.dtype == torch.bfloat16  # the rest of the network does compute in bf16
    assert {objectness[0].dtype, deltas[0].dtype, scores.dtype, boxes.dtype} == {torch.float32}
    assert all(not layer._forward_hooks for layer in coordinate_layers(light_model))
    with torch.no_grad(), autocast(light_model, resolve_precision("fp32", "cpu")):
        assert light_model.backbone.fpn.inner_blocks[0](torch.rand(1, 64, 16, 16)).dtype == torch.float32


COMMANDS = ["train", "predict", "serve", "evaluate", "label-studio-backend", "quickstart"]


@pytest.mark.parametrize("flags", [ZEN3, SAPPHIRE_RAPIDS], ids=["avx2", "amx"])
def test_help_says_what_auto_picks_on_this_cpu(flags, monkeypatch, capsys):
    monkeypatch.setattr(cpu_features, "read_cpu_flags", lambda: flags)
    expected = describe_auto_precision()
    assert expected.endswith("bf16 on the CPU" if "amx_bf16" in flags else "fp32 on the CPU")
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "--precision {auto,fp32,bf16,fp16}" in text and f"here {expected}" in text, command
