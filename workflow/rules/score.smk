# One job per model scores the val and test images of both domains: a per-class model its own
# category, the global model (loaded once) every category.
rule score:
    input:
        images=image_inputs(P, ["clean", "shift"]),
        model=lambda w: model_path(w.detector, "per_class", w.model, w.category, w.seed),
        splits=[splits_input(d) for d in DOMAINS],
        code=local(source_files("src/shiftad/score.py")),
    output:
        [f"results/scores/{{detector}}/per_class/seed{{seed}}/{{model}}_on_{data}/{split}/{{category}}.npz" for data in DOMAINS for split in ("val", "test")],
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
    threads: P.rule_threads("score")
    resources:
        **P.rule_resources("score"),
    conda:
        "../../environment.yml"
    log:
        "logs/score/{detector}_per_class_{model}_seed{seed}_{category}.log",
    shell:
        "shiftad score {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime per_class --model {wildcards.model} --category {wildcards.category} --seed {wildcards.seed} 2> {log}"


rule score_global:
    input:
        images=image_inputs(P, ["clean", "shift"]),
        model=lambda w: model_path(w.detector, "global", w.model, GLOBAL_CATEGORY, w.seed),
        splits=[splits_input(d) for d in DOMAINS],
        code=local(source_files("src/shiftad/score.py")),
    output:
        [f"results/scores/{{detector}}/global/seed{{seed}}/{{model}}_on_{data}/{split}/{c}.npz" for data in DOMAINS for split in ("val", "test") for c in P.categories],
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
    threads: P.rule_threads("score_global")
    resources:
        **P.rule_resources("score_global"),
    conda:
        "../../environment.yml"
    log:
        "logs/score/{detector}_global_{model}_seed{seed}.log",
    shell:
        "shiftad score {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime global --model {wildcards.model} --category all --seed {wildcards.seed} 2> {log}"
