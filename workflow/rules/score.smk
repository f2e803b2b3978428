rule score:
    input:
        model="results/models/{detector}/{regime}/{model}",
        splits="data/processed/splits.json",
    output:
        directory("results/scores/{detector}/{regime}/{model}_on_{data}"),
    threads: P.threads
    log:
        "logs/score/{detector}_{regime}_{model}_on_{data}.log",
    shell:
        "shiftad score {PARAMS} --detector {wildcards.detector} --regime {wildcards.regime} --model {wildcards.model} --data {wildcards.data} 2> {log}"
