"""Bundles: export from pipeline outputs (with the ONNX feature network), load with hash and
version checks, `shiftad predict` with torch and ONNX Runtime."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad import bundle as B
from shiftad.data.records import ImageRecord
from shiftad.detectors.knn import FewShotKNN
from shiftad.evaluate.thresholds import compute_thresholds
from shiftad.export import export_bundle, export_onnx, onnx_parity
from shiftad.io import save_npz
from shiftad.params import validate_params
from shiftad.paths import scores_file

from conftest import texture_records, with_defect



def photo_records(folder: Path, size: int = 96) -> list[ImageRecord]:
    """Real photographs (scikit-image's), resized, as PNG files."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name in ("chelsea", "coffee", "astronaut", "brick"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size))
        image.save(folder / f"{name}.png")
        records.append(ImageRecord(str(folder / f"{name}.png"), "tex", 0, "good", None, "val"))
    return records


def write_val_scores(detector: str, regime: str, model_domain: str, data_domain: str, category: str, image_scores, maps=None) -> None:
    """A score stage's validation file (normal images only): what export chooses thresholds from."""
    image_scores = np.asarray(image_scores, dtype=np.float64)
    maps = np.zeros((len(image_scores), 8, 8), np.float32) if maps is None else maps
    save_npz(scores_file(detector, regime, model_domain, data_domain, "val", category, 0), paths=np.array([f"v{i}.png" for i in range(len(image_scores))]),
             labels=np.zeros(len(image_scores), np.int64), image_scores=image_scores, maps=maps, seconds_per_image=np.array(0.0))


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = texture_records(tmp_path / "train", 3, size=64)
    model = FewShotKNN(image_size=64).fit(train)
    model.save(tmp_path / "results/models/knn/per_class/clean/seed0/tex")
    params = validate_params({"detectors": ["knn"], "categories": ["tex"], "image_size": 64})
    # validation scores of other normal images in the clean model's own domain; the shifted
    # domain's (far higher) must not be the bundle's threshold
    val = model.score(texture_records(tmp_path / "val", 4, size=64, seed=21))
    write_val_scores("knn", "per_class", "clean", "clean", "tex", val.image_scores, val.maps)
    write_val_scores("knn", "per_class", "clean", "shift", "tex", 10 * val.image_scores, val.maps)
    settings = params.evaluation.threshold
    threshold = compute_thresholds(val.image_scores, np.zeros(4), params.threshold_rule("knn"), settings.percentile, settings.std_multiplier).value
    return tmp_path, params, train, threshold


@pytest.fixture()
def bundle_dir(project) -> Path:
    root, params, _, _ = project
    return export_bundle(params, "knn", "per_class", "clean", root / "bundle", parity_records=photo_records(root / "photos"))


def test_export_then_load_scores_like_the_pipeline_model(project, bundle_dir):
    root, params, train, threshold = project
    bundle = B.load_bundle(bundle_dir)
    assert bundle.threshold("tex") == threshold  # the clean model's own validation threshold, not the shifted one
    defect = with_defect(texture_records(root / "t", 1, size=64, seed=5)[0], root, (10, 10, 30, 30))
    original = FewShotKNN.load(root / "results/models/knn/per_class/clean/seed0/tex").score([defect]).image_scores
    np.testing.assert_allclose(bundle.model("tex").score([defect]).image_scores, original)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["versions"]["shiftad"] and "knn" in meta["params"] and set(meta["files"]) >= {"models/tex/meta.json", B.ONNX_FILE}
    assert meta["backbone"]["backbone"] == "tf_efficientnet_lite0" and meta["backbone"]["layers"] == ["blocks.2", "blocks.4"]
    assert meta["onnx"]["parity_images"] == 4 and meta["onnx"]["parity_max_rel_diff"] <= 1e-4
    with pytest.raises(B.BundleError, match="unknown category 'nope'"):
        bundle.model("nope")


def test_onnx_feature_network_matches_torch_on_real_images_with_any_batch(tmp_path):
    """ONNX Runtime against torch within 1e-4 on photographs, for the CNN extractors of every
    detector family (PatchCore/kNN's and PaDiM's), at batch sizes other than the exported one."""
    from shiftad.detectors.padim import PaDiM

    photos = [np.asarray(Image.open(r.path)) for r in photo_records(tmp_path / "photos", size=128)]
    for model in (FewShotKNN(image_size=128), PaDiM(image_size=128, n_features=20)):
        path = tmp_path / f"{model.name}.onnx"
        facts = export_onnx(model, path, opset=17)
        assert facts["input_size"] == 128 and len(facts["outputs"]) == 2
        for batch in (photos[:1], photos):  # exported with batch 2: the batch axis is dynamic
            parity = onnx_parity(model, path, batch)
            assert parity["max_rel_diff"] <= 1e-4 and parity["max_abs_diff"] <= 1e-3, parity


def test_onnx_runtime_scores_like_torch(project, bundle_dir):
    root, _, _, threshold = project
    images = texture_records(root / "q", 3, size=64, seed=9)
    defect = with_defect(images[0], root, (20, 20, 40, 40))
    arrays = [np.asarray(Image.open(r.path).convert("RGB")) for r in [*images, defect]]
    torch_scores = B.load_bundle(bundle_dir).model("tex").score_images(arrays)
    onnx_model = B.load_bundle(bundle_dir, runtime="onnx").model("tex")
    assert onnx_model._feature_runner is not None
    onnx_scores = onnx_model.score_images(arrays)
    np.testing.assert_allclose(onnx_scores.image_scores, torch_scores.image_scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_scores.maps, torch_scores.maps, rtol=1e-3, atol=1e-3)


def test_a_bundle_without_onnx_refuses_the_onnx_runtime(project):
    root, params, _, _ = project
    params = params.model_copy(update={"export": params.export.model_copy(update={"onnx": False})})
    path = export_bundle(params, "knn", "per_class", "clean", root / "plain")
    assert not (path / B.ONNX_FILE).exists() and B.load_bundle(path).meta["onnx"] is None
    with pytest.raises(B.BundleError, match="--runtime torch"):
        B.load_bundle(path, runtime="onnx")


def test_bundles_of_one_export_call_share_one_onnx_export(project, monkeypatch):
    import shiftad.export as E

    root, params, _, _ = project
    calls = []
    real = E.export_onnx
    monkeypatch.setattr(E, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    shared: dict = {}
    first = export_bundle(params, "knn", "per_class", "clean", root / "b1", parity_records=photo_records(root / "p"), onnx_files=shared)
    second = export_bundle(params, "knn", "per_class", "clean", root / "b2", parity_records=photo_records(root / "p"), onnx_files=shared)
    assert len(calls) == 1 and len(shared) == 1
    assert (first / B.ONNX_FILE).read_bytes() == (second / B.ONNX_FILE).read_bytes()
    assert B.load_bundle(second, runtime="onnx").meta["onnx"]["parity_max_rel_diff"] <= 1e-4  # checked in every bundle


def test_export_needs_the_validation_scores_of_the_models_own_domain(project):
    root, params, _, _ = project
    (root / scores_file("knn", "per_class", "clean", "clean", "val", "tex", 0)).unlink()
    with pytest.raises(B.BundleError, match="clean_on_clean/val/tex.npz: validation scores not found"):
        export_bundle(params, "knn", "per_class", "clean", root / "b")
    assert not (root / "b").exists()


def test_an_altered_or_foreign_bundle_is_refused(project, bundle_dir):
    root, _, _, threshold = project
    bank = bundle_dir / "models/tex/memory_bank.safetensors"
    bank.write_bytes(bank.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(B.BundleError, match="do not match their recorded hashes"):
        B.load_bundle(bundle_dir)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    meta["format_version"] = 99
    (bundle_dir / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(B.BundleError, match="v99"):
        B.load_bundle(bundle_dir)
    with pytest.raises(B.BundleError, match="not a bundle"):
        B.load_bundle(root)


def test_predict_writes_records_and_overlays_and_reports_bad_files(project, bundle_dir):
    from shiftad.cli import main

    root, _, _, threshold = project
    images = texture_records(root / "in", 3, size=64, seed=7)
    (root / "in" / "broken.png").write_bytes(b"not a png")
    (root / "in" / "notes.txt").write_text("not an image")  # not an image suffix: folders skip it
    Image.fromarray(np.full((64, 64), 30000, dtype=np.uint16)).save(root / "in" / "gray16.png")
    Image.fromarray(np.zeros((64, 64, 4), dtype=np.uint8)).save(root / "in" / "rgba.png")
    (root / "in" / "sub").mkdir()
    Image.open(images[0].path).save(root / "in" / "sub" / Path(images[0].path).name)  # same stem in another folder
    status = main(["predict", "--bundle", str(bundle_dir), str(root / "in"), "--out", str(root / "out"), "--quiet", "--batch-size", "2"])
    assert status == 1  # one file failed, the others were processed
    records = json.loads((root / "out/predictions.json").read_text())
    good = [r for r in records if "prediction" in r]
    assert len(records) == 7 and len(good) == 6 and [r for r in records if "error" in r][0]["filename"].endswith("broken.png")
    for r in good:
        p = r["prediction"]
        assert p["threshold"] == threshold and p["is_anomalous"] == (p["anomaly_score"] >= threshold)
        assert Path(p["heatmap_path"]).is_file()
    assert len({r["prediction"]["heatmap_path"] for r in good}) == 6  # repeated stems do not overwrite each other
    # batching does not change a score: one image at a time gives the same numbers
    main(["predict", "--bundle", str(bundle_dir), str(root / "in"), "--out", str(root / "one"), "--quiet", "--batch-size", "1"])
    single = json.loads((root / "one/predictions.json").read_text())
    assert [r["filename"] for r in single] == [r["filename"] for r in records]
    assert [r["prediction"]["anomaly_score"] for r in single if "prediction" in r] == pytest.approx(
        [r["prediction"]["anomaly_score"] for r in good], rel=1e-5)
    assert main(["predict", "--bundle", str(bundle_dir), str(root / "in/nothing_here.png"), "--out", str(root / "o2"), "--quiet"]) == 1


def test_predict_with_onnx_runtime_and_a_glob(project, bundle_dir, capsys):
    from shiftad.cli import main

    root, _, _, threshold = project
    texture_records(root / "g", 2, size=64, seed=3)
    assert main(["predict", "--bundle", str(bundle_dir), str(root / "g" / "*.png"), "--out", str(root / "o"), "--quiet",
                 "--runtime", "onnx"]) == 0
    assert "2 images:" in capsys.readouterr().out


@pytest.fixture()
def routed_project(tmp_path, monkeypatch):
    """A routed model (router + one autoencoder per category) fitted on two visibly different
    categories, saved where the fit stage puts the global model, with validation thresholds."""
    from shiftad.detectors.routed_ae import RoutedAutoencoder

    from conftest import stripe_records

    monkeypatch.chdir(tmp_path)
    train = texture_records(tmp_path / "tex", 6, size=64) + stripe_records(tmp_path / "str", 6, size=64)
    val = texture_records(tmp_path / "tex_val", 3, size=64, seed=1) + stripe_records(tmp_path / "str_val", 3, size=64, seed=1)
    model = RoutedAutoencoder(image_size=64, hidden=16, latent=8, epochs=4, patience=2).fit(train, val)
    model.save(tmp_path / "results/models/routed_ae/global/clean/seed0/all")
    thresholds = {"tex": 10.0, "stripes": 20.0}
    for category, value in thresholds.items():  # constant normal scores: mean + 3 std (routed_ae's rule) is the value itself
        write_val_scores("routed_ae", "global", "clean", "clean", category, [value] * 3)
    params = validate_params({"detectors": ["routed_ae"], "categories": ["tex", "stripes"], "image_size": 64, "export": {"onnx": False}})
    bundle = export_bundle(params, "routed_ae", "global", "clean", tmp_path / "bundle")
    tests = texture_records(tmp_path / "tex_test", 2, size=64, seed=2) + stripe_records(tmp_path / "str_test", 2, size=64, seed=2)
    return bundle, tests, thresholds


def test_predict_without_category_routes_each_image(routed_project, tmp_path):
    from shiftad.predict import predict

    bundle_path, tests, thresholds = routed_project
    bundle = B.load_bundle(bundle_path)
    assert bundle.routes
    records = predict(bundle, [r.path for r in tests], None, tmp_path / "out", progress=False)
    assert [r["routed_category"] for r in records] == ["tex", "tex", "stripes", "stripes"]
    assert [r["category"] for r in records] == ["tex", "tex", "stripes", "stripes"]
    assert [r["prediction"]["threshold"] for r in records] == [10.0, 10.0, 20.0, 20.0]  # the routed category's threshold
    oracle = predict(bundle, [tests[0].path], "stripes", tmp_path / "oracle", progress=False)  # a named category skips the router
    assert "routed_category" not in oracle[0] and oracle[0]["prediction"]["threshold"] == 20.0
    scores = bundle.routing_model().score_images([np.asarray(Image.open(tests[0].path))], category="stripes").image_scores
    assert oracle[0]["prediction"]["anomaly_score"] == pytest.approx(float(scores[0]))
