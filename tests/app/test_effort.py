"""The effort model: actions counted on hand-made masks where the count is known, and on real nuclei."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.app.effort import (
    ImageEffort,
    choose_threshold,
    count_actions,
    effort_by_threshold,
    polygon_vertices,
)
from instaseg.core import Instances
from instaseg.formats.load import load_dataset
from instaseg.masks import masks_to_boxes
from tests.conftest import DATASETS

SIZE = (64, 64)


def square(y0: int, x0: int, side: int = 10) -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def instances(masks: list[np.ndarray], labels=None, scores=None) -> Instances:
    dense = np.array(masks, bool).reshape(-1, *SIZE)
    labels = np.ones(len(dense), np.int64) if labels is None else np.asarray(labels)
    return Instances(masks_to_boxes(dense), labels, dense, None if scores is None else np.asarray(scores))


L_SHAPE = square(10, 10, 20) & ~square(10, 20, 10)  # an L: 6 corners


@pytest.mark.parametrize(
    "mask, vertices",
    [
        (square(5, 5), 4),
        (L_SHAPE, 6),
        (square(5, 5) | square(30, 30), 8),  # two parts, a polygon each
        (square(5, 5, side=1), 4),  # one pixel: still at least 4 clicks
        (np.zeros(SIZE, bool), 4),
    ],
)
def test_a_polygon_costs_one_action_per_vertex_of_the_simplified_outline(mask, vertices):
    assert polygon_vertices(mask) == vertices


def test_a_round_outline_needs_more_vertices_than_a_square():
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 <= 20**2
    assert 12 <= polygon_vertices(disc) <= 40


def test_exact_pre_annotations_are_accepted_at_no_cost():
    truth = instances([square(5, 5), L_SHAPE])
    effort = count_actions(truth, instances([L_SHAPE, square(5, 5)], scores=[0.9, 0.8]))
    assert (effort.actions, effort.accepted, effort.deleted, effort.objects) == (0, 2, 0, 2)
    assert effort.by_hand == 4 + 6 and effort.by_hand_per_object == 5.0 and effort.accepted_share == 1.0


def test_a_poor_region_is_deleted_and_the_object_drawn():
    truth = instances([square(5, 5)])
    shifted = square(8, 5)  # IoU 70 / 130 = 0.54 < 0.75
    effort = count_actions(truth, instances([shifted], scores=[0.9]))
    assert (effort.deleted, effort.polygons, effort.polygon_actions, effort.actions) == (1, 1, 4, 5)


def test_a_region_at_the_iou_bar_is_accepted_and_one_below_is_not():
    truth = instances([square(0, 0, side=20)])
    at_bar = square(0, 0, side=20) & ~square(15, 0, side=20)  # 300 of 400 pixels: IoU 0.75
    below = square(0, 0, side=20) & ~square(14, 0, side=20)  # 280 / 400 = 0.70
    assert count_actions(truth, instances([at_bar], scores=[1.0])).actions == 0
    assert count_actions(truth, instances([below], scores=[1.0])).actions == 1 + 4


def test_a_region_of_another_class_is_not_accepted():
    truth = instances([square(5, 5)], labels=[1])
    effort = count_actions(truth, instances([square(5, 5)], labels=[2], scores=[0.9]))
    assert (effort.accepted, effort.deleted, effort.actions) == (0, 1, 1 + 4)


def test_two_regions_on_one_object_pair_one_to_one():
    truth = instances([square(5, 5)])
    near = square(5, 5) & ~square(14, 5, side=1)  # the same square minus part of its last row
    effort = count_actions(truth, instances([near, square(5, 5)], scores=[0.9, 0.8]))
    assert (effort.accepted, effort.deleted, effort.actions) == (1, 1, 1)


def test_extra_regions_cost_a_deletion_each_and_missed_objects_a_polygon():
    truth = instances([square(5, 5), L_SHAPE])
    junk = [square(45, 45), square(50, 5, side=5)]
    effort = count_actions(truth, instances([square(5, 5), *junk], scores=[0.9, 0.5, 0.4]))
    assert (effort.accepted, effort.deleted, effort.polygons, effort.actions) == (1, 2, 1, 2 + 6)
    assert count_actions(truth, None).actions == effort.by_hand == 10


def test_the_smart_box_costs_two_and_its_answer_is_accepted_when_good_enough():
    truth = instances([square(5, 5), L_SHAPE])
    prompts = []

    def smart_box(boxes, labels):
        prompts.append(boxes.copy())
        filled = [square(int(y0), int(x0), int(y1 - y0)) for x0, y0, x1, y1 in boxes]  # the box itself
        return instances(filled, labels)

    effort = count_actions(truth, None, smart_box)
    np.testing.assert_array_equal(prompts[0], truth.boxes)  # the person draws each object's tight box
    # The square's box is the square (IoU 1: accepted); the L's box is 400 px for 300 (0.75: accepted).
    assert (effort.smart_boxes, effort.smart_accepted, effort.actions) == (2, 2, 4)
    assert effort.smart_ious == [1.0, 0.75] and effort.smart_median_iou == 0.875
    assert effort.tool_ious == effort.smart_ious  # nothing pre-annotated: tried on every object
    assert (effort + effort).tool_ious == [1.0, 0.75, 1.0, 0.75]

    def wrong(boxes, labels):
        return instances([square(50, 50, 5)] * len(boxes), labels)

    effort = count_actions(truth, None, wrong)
    assert (effort.smart_accepted, effort.polygons, effort.actions) == (0, 2, 2 * 2 + 4 + 6)


def test_the_smart_box_costs_only_on_objects_not_accepted_and_is_measured_on_all():
    truth = instances([square(5, 5), L_SHAPE])
    asked = []

    def smart_box(boxes, labels):
        asked.append(len(boxes))
        return instances([L_SHAPE] * len(boxes), labels)

    effort = count_actions(truth, instances([square(5, 5)], scores=[0.9]), smart_box)
    assert asked == [2]  # one call for the image's objects
    assert (effort.accepted, effort.smart_boxes, effort.smart_accepted, effort.actions) == (1, 1, 1, 2)
    # Measured on both objects: the L's answer fits the L (1.0), not the square (25 of 375 pixels).
    assert effort.smart_ious == [1.0] and effort.tool_ious == [pytest.approx(10 / 150), 1.0]


def test_the_threshold_with_the_fewest_actions_is_chosen():
    truth = instances([square(5, 5), L_SHAPE])
    # A right region at 0.6, two false alarms at 0.45 and 0.5, the L found at 0.35 only.
    regions = instances(
        [square(5, 5), square(45, 45), square(50, 5, side=5), L_SHAPE], scores=[0.6, 0.45, 0.5, 0.35]
    )
    image = ImageEffort(truth, regions)
    assert image.count(0.3).actions == 2  # two deletions
    assert image.count(0.55).actions == 6  # the L drawn
    assert image.count(0.4).actions == 2 + 6  # the L drawn, two deletions
    threshold, totals = choose_threshold([image], grid=(0.3, 0.4, 0.55, 0.9))
    assert threshold == 0.3 and totals[0.9].actions == 10
    # Ties go to the higher threshold.
    assert choose_threshold([ImageEffort(truth, None)], grid=(0.3, 0.5))[0] == 0.5
    assert choose_threshold([ImageEffort(instances([]), regions)], grid=(0.3, 0.5))[0] is None


def test_on_real_nuclei_the_ground_truth_needs_no_action_and_many_by_hand():
    records = load_dataset(str(DATASETS / "dsb2018_nuclei_sample")).records[:3]
    images = []
    for record in records:
        truth = record.instances()
        perfect = Instances(truth.boxes, truth.labels, truth.masks, np.full(len(truth), 0.99))
        images.append(ImageEffort(truth, perfect))
    totals = effort_by_threshold(images, grid=(0.5, 1.0))
    assert totals[0.5].actions == 0 and totals[0.5].accepted == totals[0.5].objects > 20
    # Nothing shown above 0.99: every nucleus drawn, each with more than the 4-vertex minimum on average.
    assert totals[1.0].actions == totals[1.0].by_hand > 5 * totals[1.0].objects
