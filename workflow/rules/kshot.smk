# K-shot learning curves: one job per memory-bank detector (every category, clean data).
rule kshot:
    input:
        images=image_inputs(P),
        splits=all_splits_inputs(P),  # the coreset trade-off scores every domain's test images
        features=lambda w: feature_inputs(P, w.detector),
        code=local(source_files("src/shiftad/kshot.py", "src/shiftad/detectors", "src/shiftad/components", "src/shiftad/backbones.py")),
    output:
        [f"results/kshot/{{detector}}/{c}.csv" for c in P.categories] + [f"results/kshot/{{detector}}/coreset_{c}.csv" for c in P.categories],
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        few_shot=P.few_shot.model_dump(),
        detector=lambda w: P.model_dump()[w.detector],
        threshold=P.evaluation.threshold.model_dump(),
        backbone=P.backbone.model_dump(),
        seed=P.seed,
    # long jobs that only statistics and the report read (see robustness.smk)
    priority: 10
    threads: P.rule_threads("kshot")
    resources:
        **P.rule_resources("kshot"),
    conda:
        "../../environment.yml"
    log:
        "logs/kshot/{detector}.log",
    benchmark:
        "logs/benchmarks/kshot/{detector}.tsv",
    shell:
        "shiftad kshot {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} 2> {log}"
