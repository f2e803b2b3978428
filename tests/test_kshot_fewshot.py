"""K-shot curves and few-shot adaptation: seeded draws from train only, exact fast paths,
thresholds from validation images only, bank growth by the added patch count."""

import dataclasses

import numpy as np
import pytest

from shiftad import fewshot, kshot
from shiftad.detectors.knn import FewShotKNN
from shiftad.params import validate_params

from conftest import texture_records, with_defect


class FakeView:
    def __init__(self, parts: dict):
        self.parts = parts

    def get(self, category: str, split: str):
        return self.parts[(category, split)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ks")
    train = texture_records(folder / "train", 6, size=64)
    val = texture_records(folder / "val", 3, size=64, seed=1) + [with_defect(r, folder, (20, 20, 40, 40)) for r in texture_records(folder / "vb", 2, size=64, seed=2)]
    test = texture_records(folder / "test", 3, size=64, seed=3) + [with_defect(r, folder, (10, 10, 30, 30)) for r in texture_records(folder / "tb", 3, size=64, seed=4)]
    return train, val, test


def test_kshot_draws_are_seeded_distinct_and_index_the_train_list():
    a = kshot.kshot_images(40, 8, seed=0, draw=1, category="brick")
    assert np.array_equal(a, kshot.kshot_images(40, 8, seed=0, draw=1, category="brick"))
    assert len(set(a.tolist())) == 8 and a.min() >= 0 and a.max() < 40
    assert not np.array_equal(a, kshot.kshot_images(40, 8, seed=0, draw=2, category="brick"))
    assert not np.array_equal(a, kshot.kshot_images(40, 8, seed=1, draw=1, category="brick"))


@pytest.mark.parametrize("k", [1, 5])
def test_per_image_neighbour_tables_equal_fitting_the_subset(data, k):
    train, val, test = data
    model = FewShotKNN(image_size=64, k=k, image_score="top1pct")
    rows, queries = model.patch_rows(train), model.patch_rows(test)
    tables = kshot.PerImageNeighbours(model, rows, [queries])
    chosen = np.array([1, 4, 5])
    model.fit_rows(rows.take(chosen))
    fast = model.scores_from_neighbours(queries, *tables.neighbours(0, chosen), maps=False).image_scores
    np.testing.assert_allclose(fast, model.score_rows(queries).image_scores, rtol=1e-5)


def run_kshot(monkeypatch, out, train, val, test, detector="knn"):
    params = validate_params({"detectors": ["patchcore", "knn"], "image_size": 64, "categories": ["tex"],
                              "patchcore": {"coreset_ratio": 0.2},
                              "few_shot": {"kshot": [1, 2, 4], "kshot_seeds": 2}})
    monkeypatch.setattr(kshot, "domain_view", lambda domain: FakeView({("tex", "train"): train, ("tex", "val"): val, ("tex", "test"): test}))
    monkeypatch.setattr(kshot, "KSHOT_DIR", out)
    return kshot.run_kshot_stage(params, detector, progress=False)


@pytest.mark.parametrize("detector", ["knn", "patchcore"])
def test_kshot_thresholds_come_from_validation_images_only(monkeypatch, tmp_path, data, detector):
    train, val, test = data
    table = run_kshot(monkeypatch, tmp_path, train, val, test, detector)
    assert list(table["k"]) == [1, 1, 2, 2, 4, 4] and (tmp_path / detector / "tex.csv").is_file()
    assert table["memory_bank_size"].iloc[-1] == (4 * 8 * 8 if detector == "knn" else int(np.ceil(0.2 * 4 * 64)))
    assert set(table["threshold_rule"]) == {"percentile" if detector == "knn" else "f1_max"}
    flipped = [dataclasses.replace(r, label=1 - r.label, defect_type="good" if r.label else "x") for r in test]
    again = run_kshot(monkeypatch, tmp_path, train, val, flipped, detector)
    np.testing.assert_allclose(again["threshold"], table["threshold"])  # test labels never reach the threshold
    np.testing.assert_allclose(again["image_auroc"], 1 - table["image_auroc"], atol=1e-9)


def test_adaptation_images_are_nested_and_seeded(data):
    train, *_ = data
    four = fewshot.adaptation_images(train, 4, seed=0, category="tex")
    assert fewshot.adaptation_images(train, 2, seed=0, category="tex") == four[:2]
    assert set(r.path for r in four) <= set(r.path for r in train)
    with pytest.raises(Exception, match="few_shot.adaptation_k"):
        fewshot.adaptation_images(train, 7, seed=0, category="tex")


def test_align_rows_moves_each_channel_onto_the_source_statistics():
    from shiftad.detectors.memory_bank import PatchRows

    rng = np.random.default_rng(0)
    source_rows = rng.normal(2.0, 3.0, size=(5, 16, 8)).astype(np.float32)
    target_rows = (rng.normal(0.0, 1.0, size=(4, 16, 8)) * np.linspace(0.5, 4, 8) - 7).astype(np.float32)
    source, target = fewshot.channel_statistics(source_rows), fewshot.channel_statistics(target_rows)
    aligned = fewshot.align_rows(PatchRows(target_rows, (4, 4)), target, source)
    mean, sd = fewshot.channel_statistics(aligned.rows)
    np.testing.assert_allclose(mean, source[0], atol=1e-4)
    np.testing.assert_allclose(sd, source[1], rtol=1e-4)
    assert aligned.grid == (4, 4)


@pytest.fixture(scope="module")
def darker_domain(tmp_path_factory, data):
    """A darker camera: every image of the target domain ×0.6."""
    from PIL import Image

    train, val, test = data
    folder = tmp_path_factory.mktemp("dark")

    def darker(records, name):
        (folder / name).mkdir()
        out = []
        for r in records:
            path = folder / name / f"dark_{r.path.split('/')[-1]}"
            Image.fromarray((np.asarray(Image.open(r.path)) * 0.6).astype(np.uint8)).save(path)
            out.append(dataclasses.replace(r, path=str(path)))
        return out

    return {("tex", "train"): darker(train, "t"), ("tex", "val"): darker(val, "v"), ("tex", "test"): darker(test, "x")}


def _adapted(monkeypatch, tmp_path, data, darker_domain, method):
    from shiftad.io import load_npz
    from shiftad.paths import scores_file

    train, val, test = data
    clean = {("tex", "train"): train, ("tex", "val"): val, ("tex", "test"): test}
    monkeypatch.setattr(fewshot, "domain_view", lambda domain: FakeView(clean if domain == "clean" else darker_domain))
    monkeypatch.chdir(tmp_path)
    params = validate_params({"categories": ["tex"], "domains": {"dark": {"recipe": "camera_change"}}, "refit": {"domains": []},
                              "few_shot": {"adaptation_k": [0, 4]}, "image_size": 64})
    model = FewShotKNN.from_params(params).fit(train)
    model.progress = False
    before = model.score(test).image_scores
    fewshot.adapt_and_score(params, model, "knn", "per_class", ["tex"], 0, "dark", {method: [0, 4]})
    k0, k4 = (load_npz(scores_file("knn", "per_class", f"{method}_k{k}", "dark", "test", "tex", 0)) for k in (0, 4))
    np.testing.assert_allclose(k0["image_scores"], model.score(darker_domain[("tex", "test")]).image_scores, rtol=1e-6)  # K = 0: unadapted
    np.testing.assert_array_equal(model.score(test).image_scores, before)  # the shared clean network and bank are untouched
    assert k4["maps"].shape == k0["maps"].shape
    return params, model, before, k0, k4


def test_feature_align_uses_unlabelled_target_normals_and_lowers_the_shifted_normals_scores(monkeypatch, tmp_path, data, darker_domain):
    """Aligning the darker domain's patch features with K of its unlabelled normals brings its
    normal test images' scores back toward the clean ones; K = 0 is the unadapted model."""
    _, model, before, k0, k4 = _adapted(monkeypatch, tmp_path, data, darker_domain, "feature_align")
    normal = np.array([r.label == 0 for r in data[2]])
    gap = k0["image_scores"][normal].mean() - before[normal].mean()
    assert gap > 0  # the darker camera raises the normal images' scores ...
    assert k4["image_scores"][normal].mean() - before[normal].mean() < 0.75 * gap  # ... 4 unlabelled normals win back over a quarter (42%)
    assert int(k4["memory_bank_size"]) == model.memory_bank_.shape[0]  # the bank is the clean one


def test_adabn_runs_the_network_on_the_target_normals_statistics_and_the_bank_on_the_clean_ones(monkeypatch, tmp_path, data, darker_domain):
    import torch

    from shiftad.data.images import read_image

    params, model, before, k0, k4 = _adapted(monkeypatch, tmp_path, data, darker_domain, "adabn")
    assert not np.allclose(k4["image_scores"], k0["image_scores"])
    # the statistics are the images' own: the first batch norm's running mean is its input's channel mean over them
    images = [read_image(r.path) for r in darker_domain[("tex", "train")][:4]]
    network = fewshot.adabn_network(model, images)
    first = next(m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    seen = []
    hook = first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    network.train()  # a pass in train mode only to capture the input; the statistics were set before
    with torch.no_grad():
        network(model.prepare_batch(images))
    hook.remove()
    np.testing.assert_allclose(first.running_mean.numpy(), seen[0].mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    # the source side: the clean bank rebuilt on the clean images' own statistics
    source = fewshot.adabn_source_model(params, model, ["tex"])
    assert source.memory_bank_.shape == model.memory_bank_.shape and not np.allclose(source.memory_bank_, model.memory_bank_)


def test_the_coreset_curve_trades_bank_size_for_time_on_every_domain(monkeypatch, tmp_path, data, darker_domain):
    from shiftad.detectors.patchcore import PatchCore

    train, val, test = data
    clean = {("tex", "train"): train, ("tex", "val"): val, ("tex", "test"): test}
    monkeypatch.setattr(kshot, "domain_view", lambda domain: FakeView(clean if domain == "clean" else darker_domain))
    monkeypatch.setattr(kshot, "KSHOT_DIR", tmp_path)
    params = validate_params({"categories": ["tex"], "domains": {"dark": {"recipe": "camera_change"}}, "refit": {"domains": []},
                              "few_shot": {"coreset_ratios": [0.25, 0.05]}, "image_size": 64})
    model = PatchCore(image_size=64, coreset_ratio=0.1)
    model.progress = False
    table = kshot.coreset_curve(params, model, "patchcore", "tex")
    assert list(table["coreset_ratio"].unique()) == [0.05, 0.25] and set(table["test_domain"]) == {"clean", "dark"}
    banks = table.groupby("coreset_ratio")["memory_bank_size"].first()
    patches = len(train) * 8 * 8  # an 8 x 8 grid per image at 64 px
    assert banks[0.05] == pytest.approx(0.05 * patches, abs=1) and banks[0.25] == pytest.approx(0.25 * patches, abs=1)
    assert table["image_auroc"].between(0, 1).all() and (table["ms_per_image"] > 0).all()
    assert model.coreset_ratio == 0.1  # the model is left as it came
    assert (tmp_path / "patchcore" / "coreset_tex.csv").is_file()
    knn = FewShotKNN.from_params(params)
    knn.progress = False
    none = kshot.coreset_curve(params, knn, "knn", "tex")  # keeps every patch: no trade-off, the columns only
    assert none.empty and list(none.columns) == list(table.columns) and (tmp_path / "knn" / "coreset_tex.csv").is_file()


def test_padim_gets_the_label_free_adaptations_on_its_embeddings(monkeypatch, tmp_path, data, darker_domain):
    """PaDiM, no memory bank: feature_align re-standardises its embeddings' channels with K
    unlabelled target normals (the clean Gaussians unchanged), adabn scores through the network on
    their batch-norm statistics against Gaussians refitted on the clean images' own; fewshot is not its."""
    import torch

    from shiftad.detectors.padim import PaDiM
    from shiftad.io import load_npz
    from shiftad.paths import scores_file

    train, val, test = data
    clean = {("tex", "train"): train, ("tex", "val"): val, ("tex", "test"): test}
    monkeypatch.setattr(fewshot, "domain_view", lambda domain: FakeView(clean if domain == "clean" else darker_domain))
    monkeypatch.chdir(tmp_path)
    params = validate_params({"categories": ["tex"], "domains": {"dark": {"recipe": "camera_change"}}, "refit": {"domains": []},
                              "few_shot": {"adaptation_k": [0, 4]}, "image_size": 64, "padim": {"n_features": 20}})
    runs = params.scenario_runs("padim")
    assert "dark_feature_align_k4" in runs and "dark_adabn_k4" in runs and not any(r.model == "fewshot" for r in runs.values())
    assert params.adapts("padim", "adabn") and not params.adapts("padim", "fewshot") and params.adapts("knn", "fewshot")
    model = PaDiM.from_params(params).fit(train)
    model.progress = False
    before = model.score(test).image_scores
    mean, inv = model.gaussian_mean_.clone(), model.inv_covariance_.clone()
    fewshot.adapt_gaussians(params, model, "padim", "per_class", ["tex"], 0, "dark", {"feature_align": [4], "adabn": [4]})
    aligned, adabn = (load_npz(scores_file("padim", "per_class", f"{m}_k4", "dark", "test", "tex", 0)) for m in ("feature_align", "adabn"))
    shifted = model.score(darker_domain[("tex", "test")]).image_scores
    normal = np.array([r.label == 0 for r in test])
    gap = shifted[normal].mean() - before[normal].mean()
    assert abs(gap) > 1  # the darker camera moves the normal images' scores (PaDiM's: down, its activations shrink) ...
    assert abs(aligned["image_scores"][normal].mean() - before[normal].mean()) < 0.75 * abs(gap)  # ... 4 unlabelled normals win back over a quarter
    assert aligned["maps"].shape == (len(test), 64, 64) and adabn["maps"].shape == aligned["maps"].shape
    assert not np.allclose(adabn["image_scores"], shifted)
    # the clean model is untouched: same Gaussians, same scores
    assert torch.equal(model.gaussian_mean_, mean) and torch.equal(model.inv_covariance_, inv)
    np.testing.assert_array_equal(model.score(test).image_scores, before)
    # K of the domain's normals: the statistics are exactly the embeddings' per-channel ones
    embedding, _ = model.embedding_of(darker_domain[("tex", "train")][:4])
    m, s = fewshot.embedding_statistics(embedding)
    np.testing.assert_allclose(m, embedding.mean(dim=(0, 2, 3)).double().numpy(), rtol=1e-5, atol=1e-6)
    realigned = fewshot.align_embedding(embedding, (m, s), (m, s))
    torch.testing.assert_close(realigned, embedding, rtol=1e-5, atol=1e-5)  # aligning onto its own statistics changes nothing


def test_padim_refits_its_gaussians_on_embeddings_as_fit_does(data):
    import torch

    from shiftad.detectors.padim import PaDiM

    train = data[0]
    model = PaDiM(image_size=64, n_features=20).fit(train)
    model.progress = False
    again = PaDiM(image_size=64, n_features=20).fit(train)
    again.progress = False
    again.fit_embeddings(again.embedding_of(train)[0])
    torch.testing.assert_close(again.gaussian_mean_, model.gaussian_mean_)
    torch.testing.assert_close(again.inv_covariance_, model.inv_covariance_, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        again.fit_embeddings(again.embedding_of(train[:1])[0])
