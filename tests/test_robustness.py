"""The robustness sweep's conditions: shift families, and the published corruptions with the shift stage's code."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import texture_records, with_defect
from shiftad.corruptions import corrupt
from shiftad.data.images import read_image
from shiftad.params import Params
from shiftad.robustness import condition_drawer, shifted_test_images, sweep_conditions
from shiftad.shift import apply_shift, corruption_drawer


def test_the_sweep_holds_the_families_then_the_published_corruptions():
    conditions = sweep_conditions(Params())
    assert conditions[:6] == [(f, s) for f in ("geometric", "photometric", "illumination") for s in (3, 5)]
    assert conditions[6:] == [(c, 3) for c in ("brightness", "contrast", "defocus_blur", "gaussian_noise")]
    params = Params.model_validate({"robustness": {"families": ["geometric"], "severities": [2], "corruptions": ["contrast"],
                                                   "corruption_severities": [5, 1]}})
    assert sweep_conditions(params) == [("geometric", 2), ("contrast", 1), ("contrast", 5)]


def test_a_corruption_condition_is_the_shift_stages_corruption(tmp_path):
    records = texture_records(tmp_path, 3, size=48)
    records = records[:2] + [with_defect(records[2], tmp_path, (10, 10, 20, 20))]
    params = Params()
    for name in ("contrast", "defocus_blur"):  # deterministic: the same pixels as the domain's copy, whatever the draws
        swept = list(shifted_test_images(records, condition_drawer(params, name, 3), seed=0, category="tex"))
        for record, (image, mask) in zip(records, swept):
            source = read_image(record.path)
            np.testing.assert_array_equal(image, corrupt(source, name, 3))
            rng = np.random.default_rng(123)
            domain_copy, _ = apply_shift(source, None, corruption_drawer(name, 3)(rng, source.shape[:2], None, "tex"))
            np.testing.assert_array_equal(image, domain_copy)
            if record.mask_path:  # masks are unchanged by a corruption
                np.testing.assert_array_equal(mask, np.array(Image.open(record.mask_path)) > 0)
            else:
                assert mask is None
        assert not np.array_equal(swept[0][0], read_image(records[0].path))


def test_noise_is_drawn_per_image_and_repeats_with_the_seed(tmp_path):
    records = texture_records(tmp_path, 2, size=48)
    draw = condition_drawer(Params(), "gaussian_noise", 3)
    first = [image for image, _ in shifted_test_images(records, draw, seed=0, category="tex")]
    again = [image for image, _ in shifted_test_images(records, draw, seed=0, category="tex")]
    other = [image for image, _ in shifted_test_images(records, draw, seed=1, category="tex")]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    noise = [a.astype(int) - read_image(r.path).astype(int) for a, r in zip(first, records)]
    assert not np.array_equal(noise[0], noise[1])  # each image its own draw


def test_the_sweep_runs_for_robustness_detectors_only(tmp_path, capsys):
    import yaml

    from shiftad.cli import main

    p = Params.model_validate({"detectors": ["patchcore", "padim"], "robustness": {"detectors": ["padim"]}})
    assert p.robustness.detectors == ["padim"] and Params.model_validate({"detectors": ["padim"]}).robustness.detectors == ["padim"]
    with pytest.raises(Exception, match="robustness.detectors"):
        Params.model_validate({"detectors": ["patchcore"], "robustness": {"detectors": ["padim"]}})
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({"detectors": ["patchcore", "padim"], "robustness": {"detectors": ["padim"]}}))
    assert main(["robustness", "--params", str(config), "--detector", "patchcore"]) == 2
    assert "robustness.detectors" in capsys.readouterr().err
