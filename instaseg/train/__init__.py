"""Training Mask R-CNN on imported records (transfer learning from COCO, or from scratch).

Modules, by stage: :mod:`.config` (TrainConfig), :mod:`.augment` (albumentations pipelines), :mod:`.data`
(records -> torch samples), :mod:`.engine` (one epoch, validation losses, optimizer and schedule),
:mod:`.logs`, :mod:`.fit` (a whole run). The model itself (architectures, weights, checkpoints) is
:mod:`instaseg.model`.

Importing this package loads nothing heavy; :mod:`.fit`, :mod:`.engine` and :mod:`.data` load torch::

    from instaseg.train.fit import fit
    result = fit(splits, class_map, TrainConfig(...), ModelConfig(...), "runs/exp1")
"""

from .config import TrainConfig

__all__ = ["TrainConfig"]
