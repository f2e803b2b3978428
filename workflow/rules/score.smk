rule score:
    input:
        model="results/models/{detector}/{regime}/{model}/{category}",
        splits="data/processed/splits.json",
        code="src/shiftad/score.py",
    output:
        val="results/scores/{detector}/{regime}/{model}_on_{data}/val/{category}.npz",
        test="results/scores/{detector}/{regime}/{model}_on_{data}/test/{category}.npz",
    threads: P.threads
    log:
        "logs/score/{detector}_{regime}_{model}_on_{data}_{category}.log",
    shell:
        "shiftad score {PARAMS} --detector {wildcards.detector} --regime {wildcards.regime} --model {wildcards.model} --data {wildcards.data} --category {wildcards.category} 2> {log}"
