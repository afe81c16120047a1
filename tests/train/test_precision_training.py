"""Training in mixed precision on real nuclei images (the bundled Label Studio export): bf16 losses and
gradients, float32 checkpoints, the log line that says what runs, and ``--precision fp32``."""

from __future__ import annotations

import argparse
import json
import math
import warnings

import pytest
import torch

from instaseg.cli import main
from instaseg.cli.quickstart import sample_dataset_dir
from instaseg.formats.load import load_dataset
from instaseg.model import precision as precision_module
from instaseg.model.architectures import LOSS_NAMES, build_model
from instaseg.model.config import ModelConfig
from instaseg.model.precision import autocast, resolve_precision
from instaseg.train.augment import build_train_transform
from instaseg.train.config import TrainConfig
from instaseg.train.data import DetectionDataset, make_loader
from instaseg.train.engine import build_optimizer, build_scheduler, train_one_epoch

SIZE = 96
AVX2_CPU = frozenset({"sse4_2", "avx", "avx2", "fma"})


@pytest.fixture(scope="module")
def nuclei():
    dataset = load_dataset(sample_dataset_dir())
    return dataset.class_map, dataset.present[:6]


def forced_bf16():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated on CPUs without bf16: slow, but the numbers are bf16's
        return resolve_precision("bf16", "cpu")


def test_a_bf16_step_has_float32_losses_gradients_and_weights(nuclei):
    class_map, records = nuclei
    config = ModelConfig(
        arch="maskrcnn_resnet18_fpn", num_classes=1, image_size=SIZE, pretrained_backbone=False
    )
    torch.manual_seed(0)
    model = build_model(config).to(memory_format=torch.channels_last)
    data = DetectionDataset(records[:2], build_train_transform(SIZE, "keep", "none"), seed=0)
    batch = next(iter(make_loader(data, 2, False, 0, 1, 0)))
    loss_dtypes, grad_dtypes = set(), set()
    model.register_forward_hook(
        lambda module, inputs, losses: loss_dtypes.update(v.dtype for v in losses.values())
    )
    trained = [p for p in model.parameters() if p.requires_grad]
    for parameter in trained:
        parameter.register_hook(lambda grad: grad_dtypes.add(grad.dtype))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_config = TrainConfig(weights="none", workers=0, warmup_steps=0, lr=0.001)
    optimizer = build_optimizer(model, train_config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    scheduler = build_scheduler(optimizer, train_config, 1)
    cpu = torch.device("cpu")
    mean, _ = train_one_epoch(
        model, [batch], optimizer, scheduler, scaler, cpu, train_config, precision=forced_bf16()
    )
    assert set(mean) == {"loss", *LOSS_NAMES} and all(math.isfinite(v) and v > 0 for v in mean.values()), mean
    assert loss_dtypes == {torch.float32} and grad_dtypes == {torch.float32}
    after = model.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # float32 weights, updated
    assert any(not torch.equal(after[k], before[k]) for k in before if before[k].is_floating_point())
    # and bf16 did run inside: the network's layers compute in bf16 under the same context
    with torch.no_grad(), autocast(model, forced_bf16()):
        assert model.backbone.body.conv1(torch.rand(1, 3, 32, 32)).dtype == torch.bfloat16


def parse(arguments: list[str]):
    from instaseg.cli import train as train_command
    from instaseg.cli import train_setup
    from instaseg.formats.load import load_dataset

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(arguments)
    if args.resume:
        return train_setup.resumed_configs(args)[1]  # the TrainConfig
    records = load_dataset(args.data).records[:4]
    return train_setup.new_configs(args, records, 1, lambda line: None)[0]


def test_train_on_a_cpu_without_bf16_says_so_and_saves_float32(nuclei, tmp_path, monkeypatch, capsys):
    _, records = nuclei
    monkeypatch.setattr(precision_module, "read_cpu_flags", lambda: AVX2_CPU)  # whatever this machine has
    names = [r.file_name for r in records]
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": names[:2], "val": names[2:3], "test": []}))
    run, data = tmp_path / "run", sample_dataset_dir()
    arguments = ["--arch", "maskrcnn_resnet18_fpn", "--image-size", "64", "--crop", "none"]
    arguments += ["--batch-size", "2", "--workers", "0", "--device", "cpu", "--splits", str(splits)]
    arguments += ["--warmup-steps", "1", "--epochs", "1"]
    code = main(["train", data, "--out", str(run), *arguments])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.out + captured.err
    said = [line for line in out.splitlines() if line.startswith("precision:")]
    assert len(said) == 1 and "fp32 (auto): bf16 is off" in said[0] and "no native bf16" in said[0], out
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["train_config"]["precision"] == "auto"
    for name, tensor in checkpoint["model"].items():
        assert tensor.is_contiguous(), name  # the standard layout, whatever the training stored
        assert not tensor.is_floating_point() or tensor.dtype == torch.float32, (name, tensor.dtype)

    # --precision is recorded in the run's config; --resume keeps it unless another is asked for
    assert parse([data, "--out", str(tmp_path / "new"), "--precision", "fp32"]).precision == "fp32"
    assert parse([data, "--resume", str(run)]).precision == "auto"
    assert parse([data, "--resume", str(run), "--precision", "fp32"]).precision == "fp32"
