# A detector's teacher, shared by every category, regime and domain: EfficientAD's PDN (distilled
# from the offline backbone on the clean train images + scikit-image photos, or a user's weights
# file checked and copied in) and Uninformed Students' patch networks (distilled the same way).
# Rebuilt only when the teacher's own params change, never by the students' training params.
from shiftad.pipeline import TEACHER_DETECTORS, teacher_params, teacher_source_inputs


rule distill_teacher:
    input:
        images=image_inputs(P, ["clean"]),
        splits=splits_input("clean"),
        weights=lambda w: local(teacher_source_inputs(P, w.detector)),
        code=local(source_files("src/shiftad/distill.py", "src/shiftad/components", "src/shiftad/backbones.py")),
    output:
        directory("results/teachers/{detector}"),
    wildcard_constraints:
        detector="|".join(TEACHER_DETECTORS),
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        teacher=lambda w: teacher_params(P, w.detector),
        backbone=P.backbone.model_dump(),
        categories=P.categories,
        seed=P.seed,
    # the teachers head the trained detectors' longest chains (distill -> fit -> score): start them first
    priority: 30
    threads: P.rule_threads("distill_teacher")
    resources:
        **P.rule_resources("distill_teacher"),
    conda:
        "../../environment.yml"
    log:
        "logs/distill_teacher/{detector}.log",
    benchmark:
        "logs/benchmarks/distill_teacher/{detector}.tsv",
    shell:
        "shiftad distill-teacher {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} 2> {log}"
