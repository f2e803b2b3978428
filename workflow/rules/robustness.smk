# Severity sweep: one job per detector and category, clean per-class model, test images only.
rule robustness:
    input:
        model=lambda w: model_path(w.detector, "per_class", "clean", w.category),
        splits=splits_input("clean"),
        code=source_files("src/shiftad/robustness.py", "src/shiftad/shift.py"),
    output:
        "results/robustness/{detector}/{category}.npz",
    params:
        robustness=P.robustness.model_dump(),
        shift_sigma=P.shift.illumination_sigma_px,
        aupro_fpr_limit=P.evaluation.aupro_fpr_limit,
    threads: P.threads
    log:
        "logs/robustness/{detector}_{category}.log",
    shell:
        "shiftad robustness {PARAMS} --detector {wildcards.detector} --category {wildcards.category} 2> {log}"
