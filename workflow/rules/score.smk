# One job per model scores the val and test images of both domains: a per-class model its own
# category, the global model (loaded once) every category.
rule score:
    input:
        model=lambda w: model_path(w.detector, "per_class", w.model, w.category),
        splits=[splits_input(d) for d in DOMAINS],
        code=source_files("src/shiftad/score.py"),
    output:
        [f"results/scores/{{detector}}/per_class/{{model}}_on_{data}/{split}/{{category}}.npz" for data in DOMAINS for split in ("val", "test")],
    threads: P.threads
    log:
        "logs/score/{detector}_per_class_{model}_{category}.log",
    shell:
        "shiftad score {PARAMS} --detector {wildcards.detector} --regime per_class --model {wildcards.model} --category {wildcards.category} 2> {log}"


rule score_global:
    input:
        model=lambda w: model_path(w.detector, "global", w.model, GLOBAL_CATEGORY),
        splits=[splits_input(d) for d in DOMAINS],
        code=source_files("src/shiftad/score.py"),
    output:
        [f"results/scores/{{detector}}/global/{{model}}_on_{data}/{split}/{c}.npz" for data in DOMAINS for split in ("val", "test") for c in P.categories],
    threads: P.threads
    log:
        "logs/score/{detector}_global_{model}.log",
    shell:
        "shiftad score {PARAMS} --detector {wildcards.detector} --regime global --model {wildcards.model} --category all 2> {log}"
