# One job per detector, regime, model domain and seed scores the val and test images of both
# domains: each per-class model its own category, the global model (loaded once) every category.
rule score:
    input:
        images=image_inputs(P, ["clean", "shift"]),
        models=lambda w: model_inputs(P, w.detector, w.regime, w.model, w.seed),
        features=lambda w: feature_inputs(P, w.detector),
        splits=[splits_input(d) for d in DOMAINS],
        code=local(source_files("src/shiftad/score.py")),
    output:
        [f"results/scores/{{detector}}/{{regime}}/seed{{seed}}/{{model}}_on_{data}/{split}/{c}.npz" for data in DOMAINS for split in ("val", "test") for c in P.categories],
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
    threads: P.rule_threads("score")
    resources:
        **P.rule_resources("score"),
    conda:
        "../../environment.yml"
    log:
        "logs/score/{detector}_{regime}_{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/score/{detector}_{regime}_{model}_seed{seed}.tsv",
    shell:
        "shiftad score {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime {wildcards.regime} --model {wildcards.model} --seed {wildcards.seed} 2> {log}"
