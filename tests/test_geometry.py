"""The resize policy (params `resize`): model inputs, maps, masks and overlays follow one geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftad.backbones import to_tensor_batch
from shiftad.components.maps import to_map_frame
from shiftad.data.records import ImageRecord
from shiftad.evaluate.stage import ground_truth_masks, overlay
from shiftad.geometry import RESIZE_POLICIES, content_box, frame_image, frame_mask, source_box
from shiftad.params import validate_params
from shiftad.errors import ParamsError


def tall_image(height: int = 250, width: int = 100, seed: int = 0) -> np.ndarray:
    """A smooth RGB image, taller than wide (as KolektorSDD's 250 x 630 strips, turned)."""
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    rng = np.random.default_rng(seed)
    channels = [np.sin(2 * np.pi * (a * yy + b * xx)) for a, b in rng.uniform(0.5, 1.5, size=(3, 2))]
    return np.clip(128 + 100 * np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def test_boxes_of_each_policy():
    assert source_box(250, 100, "squash") == (0, 0, 250, 100) == source_box(250, 100, "pad")
    assert source_box(250, 100, "center_crop") == (75, 0, 100, 100)
    assert source_box(100, 250, "center_crop") == (0, 75, 100, 100)
    assert content_box(250, 100, 64, "squash") == (0, 0, 64, 64) == content_box(250, 100, 64, "center_crop")
    assert content_box(250, 100, 64, "pad") == (0, 19, 64, 26)  # 100 * 64 / 250 = 25.6 -> 26 wide, centred
    assert content_box(100, 250, 64, "pad") == (19, 0, 26, 64)
    assert content_box(80, 80, 64, "pad") == (0, 0, 64, 64)
    with pytest.raises(ValueError, match="resize: 'fit' is not one of squash, pad, center_crop"):
        source_box(10, 10, "fit")


def test_model_input_of_each_policy():
    image = tall_image()
    squash, pad, crop = (to_tensor_batch([image], 64, policy)[0] for policy in ("squash", "pad", "center_crop"))
    assert squash.shape == pad.shape == crop.shape == (3, 64, 64)
    # pad: the letterbox holds the image resized with its aspect kept; the margins are black
    letterbox = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, size=(64, 26),
                                                mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(pad[:, :, 19:45], letterbox)
    assert pad[:, :, :19].abs().max() == 0 and pad[:, :, 45:].abs().max() == 0
    # center_crop: the centred square, resized
    torch.testing.assert_close(crop, to_tensor_batch([image[75:175]], 64)[0])
    # squash: the whole image stretched, as before the policy existed
    expected = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, size=(64, 64), mode="bilinear",
                                               antialias=True, align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(squash, expected)


@pytest.mark.parametrize("policy", RESIZE_POLICIES)
def test_a_map_that_follows_the_input_lands_where_the_mask_does(policy):
    """A detector's map is a function of its input: a map equal to the input itself, brought to
    the map frame, must be the image brought there by `frame_image`, and a defect blob must sit
    where `frame_mask` puts its mask (the geometry of inputs, maps, masks and overlays agrees)."""
    image = tall_image()
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[140:170, 30:60] = True  # inside the centred crop (rows 75-175)
    image[mask] = 255
    size = 64
    as_map = to_tensor_batch([image], size, policy)[0].mean(0, keepdim=True).numpy()
    framed_map = to_map_frame(as_map, [image.shape[:2]], policy)[0]
    framed_image = frame_image(image, (size, size), policy).astype(np.float32).mean(-1) / 255
    assert framed_map.shape == framed_image.shape == (size, size)
    assert np.abs(framed_map - framed_image).mean() < 0.03  # interpolation differences only
    framed_mask = frame_mask(mask, (size, size), policy)
    inside, outside = framed_map[framed_mask].mean(), framed_map[~framed_mask].mean()
    assert inside > 0.9 and outside < 0.75  # pad resizes twice (into the letterbox, back out): softer edges
    y, x = np.argwhere(framed_mask).mean(0)
    y_map, x_map = np.argwhere(framed_map > 0.99).mean(0)
    assert abs(y - y_map) < 1.5 and abs(x - x_map) < 1.5


def test_to_map_frame_needs_the_sizes_only_for_pad():
    maps = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    assert to_map_frame(maps, None, "squash") is maps
    assert to_map_frame(maps, None, "center_crop") is maps
    with pytest.raises(ValueError, match="pad needs each image's size"):
        to_map_frame(maps, None, "pad")
    square = to_map_frame(maps, [(40, 40), (40, 40)], "pad")  # square images: no letterbox
    np.testing.assert_array_equal(square, maps)


def test_masks_and_overlays_follow_the_policy(tmp_path: Path):
    image = tall_image()
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    mask[10:40, 10:40] = 255  # in the top band that center_crop leaves out
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    record = ImageRecord(str(tmp_path / "a.png"), "tall", 1, "spot", str(tmp_path / "a_mask.png"), "test")
    squashed, pixel_images = ground_truth_masks([record], (64, 64), "squash")
    cropped, cropped_pixel_images = ground_truth_masks([record], (64, 64), "center_crop")
    assert squashed[0].any() and not cropped[0].any()  # the defect lies outside the crop
    assert pixel_images.all() and cropped_pixel_images.all()  # an annotated defect: its image's pixels still count
    np.testing.assert_array_equal(ground_truth_masks([record], (64, 64), "pad")[0], squashed)  # pad maps cover the whole image
    heat = np.zeros((64, 64), dtype=np.float32)
    assert overlay(image, heat, 0.0, 1.0, "center_crop").shape == (64, 64, 3)
    np.testing.assert_array_equal(frame_image(image, (64, 64), "center_crop"), frame_image(image[75:175], (64, 64), "squash"))


def test_params_name_the_policy_and_the_normalisation():
    assert validate_params({}).resize == "squash"
    assert validate_params({"resize": "pad"}).resize == "pad"
    with pytest.raises(ParamsError, match="resize"):
        validate_params({"resize": "stretch"})
    with pytest.raises(ParamsError, match="backbone.normalisation"):
        validate_params({"backbone": {"normalisation": "coco"}})


def test_imagenet_normalisation_changes_only_the_input_scaling(lite0_available):
    if not lite0_available:
        pytest.skip("offline Lite0 weights not installed")
    from shiftad.backbones import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor

    model_scaled = FeatureExtractor("tf_efficientnet_lite0", ["blocks.2"], "auto")
    imagenet = FeatureExtractor("tf_efficientnet_lite0", ["blocks.2"], "auto", normalisation="imagenet")
    assert model_scaled.mean.flatten().tolist() == pytest.approx([0.5] * 3) and model_scaled.std.flatten().tolist() == pytest.approx([0.5] * 3)
    assert imagenet.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN) and imagenet.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    x = torch.rand(1, 3, 64, 64)
    # the same network: ImageNet-scaled input = model-scaled input of the rescaled image
    rescaled = ((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)) * 0.5 + 0.5
    torch.testing.assert_close(imagenet(x)[0], model_scaled(rescaled)[0], rtol=1e-4, atol=1e-4)
