"""Records -> torch samples for Mask R-CNN: :class:`DetectionDataset` and :func:`collate`.

A sample is ``(image, target)`` as torchvision's detection models take them:

- ``image``: float32 ``(3, H, W)`` in [0, 1] (not normalised: the model does that);
- ``target``: ``boxes`` float32 ``(N, 4)`` xyxy pixels, ``labels`` int64 ``(N,)`` in 1..K, ``masks`` uint8
  ``(N, H, W)``, ``image_id`` int64 scalar, ``area`` float32 ``(N,)`` (mask pixels), ``iscrowd`` int64
  ``(N,)`` (all 0).

Crowd regions are excluded from training targets (torchvision's losses have no notion of "ignore").
Boxes are recomputed from the masks after augmentation; instances whose mask vanished (e.g. resized
below one pixel) are dropped, and an image left without instances is a negative sample (N = 0).

With a crop size (``train --crop``, :mod:`instaseg.train.crops`) a sample is a ``crop x crop`` window of
the image at native resolution (:func:`record_to_crop_arrays`): only the objects meeting the window are
decoded, and only inside it, so a 4000x3000 photo with hundreds of objects costs the crop, not hundreds of
full-size masks.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch

from ..core import Record
from ..images import load_image
from ..masks import box_pixels, box_to_mask, masks_to_boxes, rle_to_crop
from ..problems import DatasetError
from .augment import reseed
from .copy_paste import paste_objects
from .crops import MIN_VISIBLE, crop_window, crops_per_image


def record_to_arrays(record: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one record: image RGB uint8 ``(H, W, 3)``, masks uint8 ``(N, H, W)``, labels int64 ``(N,)``.

    Crowd regions are left out. An annotation with a box only is trained on its filled box as mask
    (:func:`~instaseg.masks.box_to_mask`, the rasterisation evaluation uses too).
    Raises ``DatasetError`` naming the image when the file's size differs from the record's.
    """
    image = _load_checked(record)
    instances = record.instances(crowd=False)
    if instances.has_masks:
        masks = instances.dense_masks().astype(np.uint8)
    else:  # a dataset of boxes only: each box trains as its filled box
        masks = np.array(
            [box_to_mask(b, record.height, record.width) for b in instances.boxes], dtype=np.uint8
        )
        masks = masks.reshape(len(instances), record.height, record.width)
    return image, masks, instances.labels


def _load_checked(record: Record) -> np.ndarray:
    if record.image is None:
        raise DatasetError("image file is missing", image=record.file_name)
    image = load_image(record.image)
    if image.shape[:2] != (record.height, record.width):
        raise DatasetError(
            f"image is {image.shape[1]}x{image.shape[0]} pixels but the annotations were made "
            f"for {record.width}x{record.height}; re-export or fix the annotation file",
            image=record.file_name,
        )
    return image


def record_to_crop_arrays(
    record: Record, window: tuple[int, int, int, int], crop: int, min_visible: float = MIN_VISIBLE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window ``(y0, x0, y1, x1)`` of a record at native resolution, padded to ``crop x crop``.

    Returns image RGB uint8 ``(crop, crop, 3)`` (black outside the image), masks uint8 ``(N, crop, crop)``
    and labels int64 ``(N,)``: the non-crowd objects with at least ``min_visible`` of their pixels in the
    window, their masks clipped to it (a box-only object as its filled box).
    """
    y0, x0, y1, x1 = window
    image = np.zeros((crop, crop, 3), dtype=np.uint8)
    image[: y1 - y0, : x1 - x0] = _load_checked(record)[y0:y1, x0:x1]
    masks, labels = [], []
    for a in record.annotations:
        bx0, by0, bx1, by1 = box_pixels(a.box, record.height, record.width)
        if a.iscrowd or bx1 <= x0 or bx0 >= x1 or by1 <= y0 or by0 >= y1:
            continue
        if a.rle is not None:
            part = rle_to_crop(a.rle, y0, x0, y1, x1)
        else:
            part = np.zeros((y1 - y0, x1 - x0), dtype=bool)
            part[max(by0, y0) - y0 : min(by1, y1) - y0, max(bx0, x0) - x0 : min(bx1, x1) - x0] = True
        visible = int(part.sum())
        if visible == 0 or visible < min_visible * a.area:
            continue
        mask = np.zeros((crop, crop), dtype=np.uint8)
        mask[: y1 - y0, : x1 - x0] = part
        masks.append(mask)
        labels.append(a.label)
    masks_array = np.array(masks, dtype=np.uint8).reshape(len(masks), crop, crop)
    return image, masks_array, np.array(labels, dtype=np.int64)


def arrays_to_sample(
    image: np.ndarray, masks: np.ndarray, labels: np.ndarray, image_id: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Tensors of one (augmented) sample; boxes from the masks, empty masks dropped. See the module doc."""
    height, width = image.shape[:2]
    masks = masks.reshape(len(masks), height, width)
    keep = masks.any(axis=(1, 2))
    masks, labels = masks[keep], labels[keep]
    boxes = masks_to_boxes(masks.astype(bool))  # (N, 4) xyxy, x_max/y_max exclusive: width >= 1
    target = {
        "boxes": torch.from_numpy(boxes).reshape(-1, 4),
        "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)).reshape(-1, height, width),
        "image_id": torch.tensor(image_id, dtype=torch.int64),
        "area": torch.from_numpy(masks.sum(axis=(1, 2), dtype=np.int64).astype(np.float32)),
        "iscrowd": torch.zeros(len(masks), dtype=torch.int64),
    }
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)  # (3, H, W)
    return tensor, target


def augment_arrays(
    pipeline: A.Compose, image: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``pipeline`` to an image ``(H, W, 3)`` and masks ``(N, H, W)``; returns the transformed pair."""
    if len(masks) == 0:  # albumentations cannot stack an empty mask list
        out = pipeline(image=image)
        return out["image"], np.zeros((0, *out["image"].shape[:2]), dtype=np.uint8)
    out = pipeline(image=image, masks=masks)
    return out["image"], np.asarray(out["masks"], dtype=np.uint8).reshape(len(masks), *out["image"].shape[:2])


class DetectionDataset(torch.utils.data.Dataset):
    """Torch dataset over records, decoding and augmenting on access.

    Args:
        records: records whose image file exists (``record.image`` set).
        pipeline: an albumentations pipeline from :mod:`instaseg.train.augment`.
        seed: with :meth:`set_epoch` and the sample index, seeds the augmentation of each sample.
        crop: samples are ``crop x crop`` windows at native resolution (:mod:`instaseg.train.crops`);
            ``None``: whole images (the pipeline resizes them).
        random_crops: with ``crop``, :func:`~.crops.crops_per_image` windows per image, drawn anew each
            epoch (training), or the same ones every epoch when ``False`` (validation: comparable losses).
        copy_paste: paste objects of another sample, drawn at random each epoch and augmented on its own,
            onto each sample (:func:`~.copy_paste.paste_objects`; ``train --augment copy-paste``).
    """

    def __init__(
        self,
        records: list[Record],
        pipeline: A.Compose,
        seed: int = 0,
        crop: int | None = None,
        random_crops: bool = True,
        copy_paste: bool = False,
    ):
        missing = [r.file_name for r in records if r.image is None]
        if missing:
            raise DatasetError(f"{len(missing)} image file(s) missing, e.g. {missing[0]}")
        self.records = list(records)
        self.pipeline = pipeline
        self.seed = seed
        self.epoch = 0
        self.crop, self.random_crops = crop, random_crops
        self.copy_paste = copy_paste
        repeats = [crops_per_image(r.height, r.width, crop) if crop else 1 for r in self.records]
        self.sample_records = np.repeat(np.arange(len(self.records)), repeats)  # sample -> record

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch`` (call before creating the epoch's DataLoader iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sample_records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[self.sample_records[index]]
        image, masks, labels = self._augmented(index, self.seed)
        if self.copy_paste and len(self) > 1:
            rng = np.random.default_rng([self.seed, self.epoch, index, 11])  # 11: copy-paste's own stream
            other = int(rng.integers(len(self) - 1))
            other += other >= index  # any sample but this one
            source = self._augmented(other, self.seed + 1)  # its own augmentation, not its usual one
            image, masks, labels = paste_objects(image, masks, labels, *source, rng)
        return arrays_to_sample(image, masks, labels, record.image_id)

    def _augmented(self, index: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``index`` decoded and through the pipeline seeded by ``(seed, epoch, index)``: image
        ``(H, W, 3)``, masks ``(N, H, W)``, labels ``(N,)``."""
        record = self.records[self.sample_records[index]]
        if self.crop is None:
            image, masks, labels = record_to_arrays(record)
        else:
            epoch = self.epoch if self.random_crops else 0
            rng = np.random.default_rng([self.seed, epoch, index, 7])  # 7: the crops' own stream
            boxes = np.array([a.box for a in record.annotations if not a.iscrowd], np.float32)
            window = crop_window(record.height, record.width, self.crop, boxes.reshape(-1, 4), rng)
            image, masks, labels = record_to_crop_arrays(record, window, self.crop)
        reseed(self.pipeline, seed, self.epoch, index)
        image, masks = augment_arrays(self.pipeline, image, masks)
        return image, masks, labels


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Batch as torchvision's detection models want it: a list of images and a list of targets."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def make_loader(
    dataset: DetectionDataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    epoch: int,
    seed: int,
    shard: tuple[int, int] | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader for one epoch: shuffling seeded by ``(seed, epoch)`` so a resumed run draws the same order.

    Workers are not persistent, so each epoch's workers get the dataset with its current epoch.

    ``shard = (rank, world_size)`` (DDP) gives this rank its share only. Shuffled (training): a
    ``DistributedSampler`` whose permutation, seeded by ``(seed, epoch)``, is the same on every rank, so the
    ranks' shares are disjoint; it repeats a few samples when the count does not divide, so that every rank
    runs as many batches (DDP needs that). Not shuffled (validation): samples ``rank, rank + world_size, ...``
    with no repetition; ranks may then run different numbers of batches.
    """
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    sampler = None
    if shard is not None:
        rank, world_size = shard
        if shuffle:
            sampler = torch.utils.data.DistributedSampler(
                dataset,
                num_replicas=world_size,
                rank=rank,
                shuffle=True,
                seed=seed * 100_003,
                drop_last=False,
            )
            sampler.set_epoch(epoch)
        else:
            sampler = list(range(rank, len(dataset), world_size))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        drop_last=False,
        pin_memory=False,
    )
