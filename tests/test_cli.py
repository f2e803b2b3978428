"""CLI verbs of the grouped jobs: one job covers every model / category / bundle of its kind,
a flag narrows it to one; contradictory flags are an error that says what to give."""

from __future__ import annotations

from shiftad.cli import build_parser, main

from conftest import REPO


def test_grouped_verbs_take_no_category_and_a_flag_narrows_them():
    parser = build_parser()
    assert parser.parse_args(["fit", "--detector", "padim", "--regime", "per_class", "--domain", "clean"]).category is None
    assert parser.parse_args(["score", "--detector", "padim", "--regime", "global", "--model", "shift"]).category is None
    assert parser.parse_args(["robustness", "--detector", "knn", "--category", "brick"]).category == "brick"
    export = parser.parse_args(["export", "--detector", "padim"])
    assert (export.regime, export.domain, export.out) == (None, None, None)


def test_export_out_names_one_bundle(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["export", "--detector", "padim", "--out", "somewhere"]) == 2
    assert "export --out: names one bundle; give --regime and --domain with it" in capsys.readouterr().err


def test_robustness_refuses_a_category_outside_params(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["robustness", "--detector", "knn", "--category", "nope"]) == 2
    assert "--category: category 'nope' is not in params categories" in capsys.readouterr().err
