"""The data contract: dataset.json of scale-decomposed datasets and their multi-class variant."""

import json

import pytest
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_aux.dataset_format import (
    SCALES_KEY,
    load_dataset_json,
    make_scale_dataset_json,
    multiclass_dataset_json,
    read_scale_spec,
    scale_names,
    write_dataset_json,
)
from nnunet_aux.errors import InputError


def test_scale_names():
    assert scale_names(2) == ("small", "large")
    assert scale_names(3) == ("small", "medium", "large")
    assert scale_names(5) == ("small", "medium1", "medium2", "medium3", "large")
    with pytest.raises(ValueError, match="at least 2"):
        scale_names(1)


def test_make_scale_dataset_json_is_the_design_layout():
    dj = make_scale_dataset_json(7, 3, other_labels=["tumour"], name="X", description="d")
    assert dj["labels"] == {"background": 0, "vessel": [1, 2, 3], "tumour": 4}
    assert dj["regions_class_order"] == [1, 4]  # each region written with a value inside it
    assert dj[SCALES_KEY] == {"vessel": {"small": 1, "medium": 2, "large": 3}}
    assert dj["numTraining"] == 7 and dj["file_ending"] == ".nii.gz" and dj["channel_names"] == {"0": "CT"}
    assert dj["name"] == "X" and dj["description"] == "d"


@pytest.mark.parametrize("n_scales, others, ignore", [(2, [], False), (3, ["tumour"], False),
                                                       (4, ["liver", "tumour"], True)])
def test_nnunet_label_manager_accepts_it(n_scales, others, ignore):
    dj = make_scale_dataset_json(1, n_scales, other_labels=others, ignore=ignore)
    lm = LabelManager(dj["labels"], dj["regions_class_order"])
    assert lm.has_regions
    assert lm.all_regions == [tuple(range(1, n_scales + 1)), *range(n_scales + 1, n_scales + 1 + len(others))]
    assert lm.num_segmentation_heads == 1 + len(others)
    if ignore:  # nnU-Net wants the ignore label highest
        assert lm.ignore_label == n_scales + len(others) + 1
    spec = read_scale_spec(dj)
    assert spec.scale_labels == tuple(range(1, n_scales + 1))
    assert spec.n_scales == n_scales and spec.structure_region == spec.scale_labels
    assert spec.ignore_label == (lm.ignore_label if ignore else None)
    assert list(spec.regions) == ["vessel", *others] and not spec.multiclass


def test_regions_class_order_and_bad_names():
    dj = make_scale_dataset_json(1, 2, other_labels=["liver"], regions_class_order=[2, 3])
    assert dj["regions_class_order"] == [2, 3]
    with pytest.raises(ValueError, match="regions_class_order needs 2"):
        make_scale_dataset_json(1, 2, other_labels=["liver"], regions_class_order=[1])
    with pytest.raises(ValueError, match=r"writes 'liver' \[3\] as 1, a value outside"):
        make_scale_dataset_json(1, 2, other_labels=["liver"], regions_class_order=[1, 1])
    with pytest.raises(ValueError, match="twice or reserved"):
        make_scale_dataset_json(1, 2, other_labels=["vessel"])


def test_read_scale_spec_errors_name_the_file():
    dj = make_scale_dataset_json(1, 3)
    no_scales = {k: v for k, v in dj.items() if k != SCALES_KEY}
    with pytest.raises(InputError, match=r"/x/dataset.json has no 'scales'.*nnunet_aux decompose"):
        read_scale_spec(no_scales, "/x/dataset.json")
    bad = dict(dj, scales={"vessel": {"small": 1, "medium": 2, "large": 7}})
    with pytest.raises(InputError, match=r"f.json: scale label\(s\) \[7\]"):
        read_scale_spec(bad, "f.json")
    bad = dict(dj, scales={"vessel": {"small": 1, "large": 2}})
    with pytest.raises(InputError, match="exactly its scale labels"):
        read_scale_spec(bad)
    with pytest.raises(InputError, match="exactly one structure"):
        read_scale_spec(dict(dj, scales={}))
    with pytest.raises(InputError, match="regions_class_order"):
        read_scale_spec({k: v for k, v in dj.items() if k != "regions_class_order"})
    with pytest.raises(InputError, match="no 'labels'"):
        read_scale_spec({"scales": dj["scales"]})


def test_read_scale_spec_sorts_scales_by_value():
    dj = make_scale_dataset_json(1, 3)
    dj["scales"] = {"vessel": {"large": 3, "small": 1, "medium": 2}}
    assert read_scale_spec(dj).scale_names == ("small", "medium", "large")


def test_multiclass_variant():
    dj = make_scale_dataset_json(5, 3, other_labels=["tumour"], ignore=True, name="N")
    mc = multiclass_dataset_json(dj)
    assert mc["labels"] == {"background": 0, "vessel_small": 1, "vessel_medium": 2, "vessel_large": 3,
                            "tumour": 4, "ignore": 5}
    assert "regions_class_order" not in mc
    assert mc["numTraining"] == 5 and mc["name"] == "N"
    lm = LabelManager(mc["labels"], mc.get("regions_class_order"))
    assert not lm.has_regions and lm.ignore_label == 5 and lm.num_segmentation_heads == 5
    spec = read_scale_spec(mc)
    assert spec.multiclass and spec.scale_labels == (1, 2, 3) and spec.regions_class_order is None
    with pytest.raises(InputError, match="already a multi-class"):
        multiclass_dataset_json(mc)
    assert dj["labels"]["vessel"] == [1, 2, 3]  # the input is left alone


def test_write_and_load_dataset_json(tmp_path):
    dj = make_scale_dataset_json(2, 2)
    path = write_dataset_json(dj, tmp_path)
    assert path == tmp_path / "dataset.json"
    assert json.loads(path.read_text(encoding="utf-8")) == dj == load_dataset_json(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.json"]  # no temporary file left
    with pytest.raises(InputError, match="missing file"):
        load_dataset_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json is not valid JSON"):
        load_dataset_json(tmp_path / "bad.json")


# ------------------------------------------------------------------ regions_class_order (issue 12)
OLD_MSD = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4},
           "regions_class_order": [1, 2], "scales": {"vessel": {"small": 1, "medium": 2, "large": 3}},
           "numTraining": 1, "file_ending": ".nii.gz"}


@pytest.mark.parametrize("n_scales, others, ignore", [(2, [], False), (3, ["tumour"], False),
                                                       (4, ["liver", "tumour"], True)])
def test_nnunet_writes_every_region_inside_itself(n_scales, others, ignore):
    """What nnU-Net's predictor writes, nnU-Net's evaluation reads back as the same regions."""
    import numpy as np
    import torch

    dj = make_scale_dataset_json(1, n_scales, other_labels=others, ignore=ignore)
    lm = LabelManager(dj["labels"], dj["regions_class_order"])
    rng = np.random.default_rng(0)
    truth = rng.integers(0, n_scales + len(others) + 1, size=(6, 7, 8))  # a label map without ignore
    onehot = np.stack([np.isin(truth, r) for r in lm.foreground_regions]).astype(np.float32)
    written = lm.convert_probabilities_to_segmentation(torch.from_numpy(onehot)).numpy()
    for region, channel in zip(lm.foreground_regions, onehot):
        np.testing.assert_array_equal(np.isin(written, region), channel.astype(bool))


def test_old_regions_class_order_is_detected_with_the_upgrade_command():
    from nnunet_aux.dataset_format import check_regions_class_order, upgrade_dataset_json

    with pytest.raises(InputError, match=r"writes 'tumour' \[4\] as 2, which nnU-Net's evaluation reads as "
                                         r"'vessel'.*nnunet_aux upgrade -d 508.*\[1, 4\]"):
        read_scale_spec(OLD_MSD, "dataset.json of Dataset508_MSDHepaticVessel")
    with pytest.raises(InputError, match="nnunet_aux upgrade -d ID"):
        check_regions_class_order(OLD_MSD, "x.json")
    new, changed = upgrade_dataset_json(OLD_MSD)
    assert changed and new["regions_class_order"] == [1, 4] and OLD_MSD["regions_class_order"] == [1, 2]
    assert read_scale_spec(new).regions_class_order == (1, 4)
    assert upgrade_dataset_json(new) == (new, False)
    plain = {"labels": {"background": 0, "vessel": 1}}
    assert upgrade_dataset_json(plain) == (plain, False)


def test_scales_naming_other_structures_are_refused():
    """Case 9: 'artery' is no label; its 'scales' point at the vessel (1) and the tumour (2)."""
    dj = {"labels": {"background": 0, "vessel": 1, "tumour": 2}, "scales": {"artery": {"small": 1, "large": 2}},
          "numTraining": 1, "file_ending": ".nii.gz", "channel_names": {"0": "CT"}}
    with pytest.raises(InputError, match=r"f.json: scales\['artery'\] names small=1, large=2.*artery_small"):
        read_scale_spec(dj, "f.json")
