"""The baseline of bench/quality.py: torchvision's default Mask R-CNN recipe from scratch, no instaseg code in
the training loop (the reference scripts' loop: ``model(images, targets)``, SGD).

    .venv/bin/python bench/torchvision_baseline.py --minutes 15 --out runs/quality/torchvision

``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` (BatchNorm, all layers trainable), images
resized by the model to 512 px, random horizontal flip, SGD lr 0.01 momentum 0.9 weight decay 1e-4, 50
linear warmup steps, batch 2, until the time budget runs out (no schedule decay: the reference recipe decays
by epochs it does not reach here). The weights are saved as an instaseg checkpoint (same layer names:
``maskrcnn_resnet50_fpn`` with ``pretrained_backbone = false``) so that the same ``instaseg evaluate``
scores both recipes.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.model.checkpoint import checkpoint_header, save_atomic
from instaseg.model.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "datasets" / "dsb2018_nuclei_sample"


def samples(records):
    """(image tensor (3, H, W) in [0, 1], target dict) of each training record (no augmentation yet)."""
    out = []
    for record in records:
        image = torch.from_numpy(load_image(record.image).transpose(2, 0, 1).copy()).float() / 255
        instances = record.instances()
        masks = torch.from_numpy(instances.dense_masks().astype(np.uint8))
        target = {
            "boxes": torch.from_numpy(instances.boxes),
            "labels": torch.from_numpy(instances.labels),
            "masks": masks,
        }
        out.append((image, target))
    return out


def flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DSB))
    parser.add_argument("--splits", default=str(REPO / "bench" / "dsb_split_36_4_20.json"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--out", default="runs/quality/torchvision")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    dataset = load_dataset(args.data)
    train_names = set(json.loads(Path(args.splits).read_text())["train"])
    train = samples([r for r in dataset.present if r.file_name in train_names])
    classes = dataset.class_map.num_classes
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=classes + 1
    )
    model.transform.min_size, model.transform.max_size = (args.image_size,), args.image_size
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, 0.001 + step / 50))
    model.train()
    started, steps = time.monotonic(), 0
    deadline = started + 60 * args.minutes
    while time.monotonic() < deadline:
        order = list(range(len(train)))
        random.shuffle(order)
        for first in range(0, len(order) - 1, 2):
            batch = [train[i] for i in order[first : first + 2]]
            batch = [flip(*b) if random.random() < 0.5 else b for b in batch]
            losses = model([b[0] for b in batch], [b[1] for b in batch])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            warmup.step()
            steps += 1
            if time.monotonic() >= deadline:
                break
    config = ModelConfig(
        arch="maskrcnn_resnet50_fpn",
        num_classes=classes,
        image_size=args.image_size,
        pretrained_backbone=False,
        detections_per_image=300,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = checkpoint_header(list(dataset.class_map.names), config, {"recipe": "torchvision default"})
    payload.update(model=model.state_dict(), epoch=0, metrics={"steps": steps})
    save_atomic(payload, out / "best.pt")
    print(
        json.dumps(
            {"steps": steps, "epochs": steps * 2 / len(train), "minutes": (time.monotonic() - started) / 60}
        )
    )


if __name__ == "__main__":
    main()
