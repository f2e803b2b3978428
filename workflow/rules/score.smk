# One job per model and category scores the val and test images of both domains.
rule score:
    input:
        model=lambda w: model_path(w.detector, w.regime, w.model, w.category),
        splits=[splits_input(d) for d in DOMAINS],
        code=source_files("src/shiftad/score.py"),
    output:
        [f"results/scores/{{detector}}/{{regime}}/{{model}}_on_{data}/{split}/{{category}}.npz" for data in DOMAINS for split in ("val", "test")],
    threads: P.threads
    log:
        "logs/score/{detector}_{regime}_{model}_{category}.log",
    shell:
        "shiftad score {PARAMS} --detector {wildcards.detector} --regime {wildcards.regime} --model {wildcards.model} --category {wildcards.category} 2> {log}"
