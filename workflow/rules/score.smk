from shiftad.pipeline import TEACHER_DETECTORS, score_dir

# One job per detector, regime and seed: the regime's models of every domain the detector is
# fitted on score the val and test images of the domains their pairs name (Params.scored_pairs,
# `pipeline.score_dir`: a folder, as the files differ by detector; each per-class model
# its own category, the global model, loaded once, every category). Every domain's models in one
# job: one process start, not several.
rule score:
    input:
        images=image_inputs(P),
        models=lambda w: [m for d in P.fit_domains_of(w.detector) for m in model_inputs(P, w.detector, w.regime, d, w.seed)],
        features=lambda w: feature_inputs(P, w.detector),
        splits=all_splits_inputs(P),
        code=local(source_files("src/shiftad/score.py")),
    output:
        directory(score_dir("{detector}", "{regime}", "{seed}")),
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
    # the longest scoring jobs first, so short ones fill the cores up to evaluate: a global model
    # searches every category's bank for every category's images, the kNN's banks keep every
    # patch (its per-class job outlasts the other detectors' global ones), EfficientAD and
    # Uninformed Students run trained networks on every image
    priority: lambda w: int(w.regime == "global") + int(w.detector in TEACHER_DETECTORS) + 2 * int(w.detector == "knn")
    threads: P.rule_threads("score")
    resources:
        **P.rule_resources("score"),
    conda:
        "../../environment.yml"
    log:
        "logs/score/{detector}_{regime}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/score/{detector}_{regime}_seed{seed}.tsv",
    shell:
        "shiftad score {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime {wildcards.regime} --seed {wildcards.seed} 2> {log}"
