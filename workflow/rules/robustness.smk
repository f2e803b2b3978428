# Severity sweep: one job per detector and category, clean per-class model, test images only.
rule robustness:
    input:
        images=image_inputs(P, ["clean"]),
        model=lambda w: model_path(w.detector, "per_class", "clean", w.category, P.reference_seed),  # the reference run's model
        splits=splits_input("clean"),
        code=local(source_files("src/shiftad/robustness.py", "src/shiftad/shift.py")),
    output:
        "results/robustness/{detector}/{category}.npz",
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        robustness=P.robustness.model_dump(),
        shift_sigma=P.shift.illumination_sigma_px,
        aupro_fpr_limit=P.evaluation.aupro_fpr_limit,
    threads: P.rule_threads("robustness")
    resources:
        **P.rule_resources("robustness"),
    conda:
        "../../environment.yml"
    log:
        "logs/robustness/{detector}_{category}.log",
    shell:
        "shiftad robustness {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --category {wildcards.category} 2> {log}"
