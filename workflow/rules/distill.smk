# EfficientAD's teacher, shared by every category, regime and domain: distilled from the offline
# backbone on the clean train images + scikit-image photos, or a user's weights file checked and
# copied in. Rebuilt only when its own params change.
rule distill_teacher:
    input:
        raw="data/raw/source.json",
        manifest="data/processed/manifest.json",
        splits=splits_input("clean"),
        weights=teacher_source_inputs(P),
        code=source_files("src/shiftad/distill.py", "src/shiftad/components", "src/shiftad/backbones.py"),
    output:
        directory("results/teachers/efficientad"),
    params:
        teacher={k: v for k, v in P.efficientad.model_dump().items() if k in ("scale", "model_size", "architecture", "teacher")},
        backbone=P.backbone.model_dump(),
        categories=P.categories,
        seed=P.seed,
    threads: P.threads
    log:
        "logs/distill_teacher.log",
    shell:
        "shiftad distill-teacher {PARAMS} 2> {log}"
