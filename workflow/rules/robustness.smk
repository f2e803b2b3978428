# Severity sweep: one job per detector (every category), clean per-class models, test images only.
rule robustness:
    input:
        images=image_inputs(P, ["clean"]),
        models=lambda w: model_inputs(P, w.detector, "per_class", "clean", P.reference_seed),  # the reference run's models
        features=lambda w: feature_inputs(P, w.detector, "robustness"),
        splits=splits_input("clean"),
        code=local(source_files("src/shiftad/robustness.py", "src/shiftad/shift.py", "src/shiftad/corruptions.py")),
    output:
        [f"results/robustness/{{detector}}/{c}.npz" for c in P.categories],
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        robustness=P.robustness.model_dump(),
        shift_sigma=P.shift.illumination_sigma_px,
        aupro_fpr_limit=P.evaluation.aupro_fpr_limit,
    # long jobs that only statistics reads: started as soon as their models exist, they run beside
    # fit/score instead of last, where one core would idle while evaluate (2 threads) waits for them
    priority: 10
    threads: P.rule_threads("robustness")
    resources:
        **P.rule_resources("robustness"),
    conda:
        "../../environment.yml"
    log:
        "logs/robustness/{detector}.log",
    benchmark:
        "logs/benchmarks/robustness/{detector}.tsv",
    shell:
        "shiftad robustness {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} 2> {log}"
