# shiftad DAG: data -> split -> shift (one job per shift domain) -> features (frozen networks, once per image) -> (distill-teacher) -> fit -> score (+ fewshot) -> evaluate -> robustness -> statistics
# -> notebooks -> report; kshot (learning curves) feeds the report; export writes a bundle per
# fitted model (after evaluate: the bundles carry the validation thresholds).
# Rules only call the `shiftad` CLI; every number lives in params.yaml.
# `--configfile my.yaml` overrides params.yaml key by key, and the CLI sees the same files.

from pathlib import Path

from shiftad.params import validate_params
from shiftad.pipeline import (all_splits_inputs, data_outputs, export_outputs, feature_inputs, image_inputs, source_files, storage_root, splits_input,
                              teacher_source_inputs, untracked, user_image_inputs)

configfile: "params.yaml"

P = validate_params(config, source="params.yaml + --configfile")
PARAMS = " ".join(["--params params.yaml"] + [f"--params {f}" for f in workflow.overwrite_configfiles])
ROOT = storage_root(workflow)  # where jobs find data/, results/, report/: "." here, the storage's local copy on Kubernetes


include: "workflow/rules/data.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/shift.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/fewshot.smk"
include: "workflow/rules/kshot.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/notebooks.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    input:
        rules.report.output,
        export_outputs(P),
    default_target: True
