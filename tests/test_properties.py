"""Property tests of the conversions between masks, label maps, instances, RLE, boxes and
COCO (issue 19): every round trip returns what went in, for any mask hypothesis draws.

Oracles: the input itself (round trips), scikit-image's ``regionprops`` for boxes, and a
slow obvious reference (the mask's nonzero extent) for each instance.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segloc import coco, instances, masks

PROFILE = settings(max_examples=80, deadline=None)


def label_maps(max_side: int = 16, max_label: int = 4, ndim: int = 2):
    return hnp.arrays(
        np.int32,
        st.tuples(*[st.integers(1, max_side)] * ndim),
        elements=st.integers(0, max_label),
    )


def _extent(mask: np.ndarray) -> list[float]:
    """Slow obvious reference: COCO bbox of a 2D mask from its nonzero rows and columns."""
    rows, cols = np.nonzero(mask)
    return [
        float(cols.min()),
        float(rows.min()),
        float(cols.max() + 1 - cols.min()),
        float(rows.max() + 1 - rows.min()),
    ]


@PROFILE
@given(label_maps(), st.sampled_from([1, 2]))
def test_labels_to_instances_and_back(labels, connectivity):
    inst, class_of = instances.semantic_to_instances(labels, connectivity=connectivity)
    np.testing.assert_array_equal(instances.instances_to_semantic(inst, class_of), labels)
    ids = np.unique(inst[inst > 0])
    assert ids.tolist() == list(range(1, len(ids) + 1))  # relabelled 1..N, no gaps
    assert set(class_of) == set(ids.tolist())
    for i, c in class_of.items():  # an instance lies inside one class
        assert set(np.unique(labels[inst == i]).tolist()) == {c}


@PROFILE
@given(label_maps(ndim=3, max_side=6))
def test_onehot_round_trip(labels):
    k = int(labels.max()) + 1
    onehot = masks.label_to_onehot(labels, num_classes=k)
    assert onehot.shape[0] == k and onehot.sum(axis=0).max() == 1
    np.testing.assert_array_equal(masks.onehot_to_label(onehot), labels)


@PROFILE
@given(label_maps(max_label=6))
def test_instances_to_coco_rle_and_boxes_round_trip(labels):
    inst, class_of = instances.semantic_to_instances(labels)
    anns = coco.masks_to_coco_annotations(inst, class_of, image_id=3)
    ids, boxes = instances.instance_boxes(inst)
    assert [a["instance"] for a in anns] == ids.tolist()
    h, w = inst.shape
    for ann, box in zip(anns, boxes, strict=True):
        mask = inst == ann["instance"]
        # mask -> RLE -> mask, the RLE's area, the box three ways
        np.testing.assert_array_equal(coco.rle_decode(ann["segmentation"]), mask)
        assert coco.rle_area(ann["segmentation"]) == ann["area"] == mask.sum()
        assert ann["bbox"] == _extent(mask) == coco.box_to_coco(box)
        np.testing.assert_array_equal(coco.coco_to_box(ann["bbox"]), box)
        assert ann["category_id"] == class_of[ann["instance"]]
        assert coco.rle_encode(mask) == ann["segmentation"]
    # a COCO dataset built from them passes its own checks and keeps every annotation
    cats = [{"id": c, "name": str(c)} for c in sorted(set(class_of.values()))]
    ds = coco.coco_dataset([{"id": 3, "height": h, "width": w}], anns, cats)
    assert coco.check_coco_dataset(ds, geometry="segm") is ds
    assert len(ds["annotations"]) == len(anns)


@PROFILE
@given(
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(1, 30),
    st.integers(1, 30),
)
def test_box_voc_coco_round_trips(x, y, w, h):
    box = (float(x), float(y), float(x + w), float(y + h))
    assert coco.voc_to_box(*coco.box_to_voc(box)) == box
    np.testing.assert_array_equal(coco.coco_to_box(coco.box_to_coco(box)), box)
    # the box of the mask it covers is the box
    mask = np.zeros((y + h + 2, x + w + 2), bool)
    mask[y : y + h, x : x + w] = True
    _, boxes = instances.instance_boxes(mask.astype(np.int32))
    assert tuple(boxes[0]) == box


@PROFILE
@given(
    label_maps(max_label=5),
    st.permutations(list(range(6))),
)
def test_label_mapping_is_a_relabelling(labels, perm):
    # engine.data's label_mapping: a bijection maps and maps back; names it lacks stay
    from segloc.engine.data import _apply_mapping

    mapping = {old: new for old, new in enumerate(perm)}
    mapped = _apply_mapping(labels, mapping)
    back = _apply_mapping(mapped, {new: old for old, new in mapping.items()})
    np.testing.assert_array_equal(back, labels)
    partial = {1: 9}
    out = _apply_mapping(labels, partial)
    np.testing.assert_array_equal(out[labels != 1], labels[labels != 1])
    assert (out[labels == 1] == 9).all()


@PROFILE
@given(label_maps(max_side=12, max_label=3))
def test_records_to_coco_and_back_to_boxes(labels):
    inst, class_of = instances.semantic_to_instances(labels)
    ids, boxes = instances.instance_boxes(inst)
    h, w = labels.shape
    record = {
        "file_name": "a.png",
        "height": h,
        "width": w,
        "boxes": boxes,
        "classes": [f"c{class_of[int(i)]}" for i in ids],
    }
    ds = coco.records_to_coco([record])
    got = [coco.coco_to_box(a["bbox"]) for a in ds["annotations"]]
    np.testing.assert_array_equal(np.array(got).reshape(-1, 4), boxes.reshape(-1, 4))
    names = {c["id"]: c["name"] for c in ds["categories"]}
    assert [names[a["category_id"]] for a in ds["annotations"]] == record["classes"]
