from shiftad.pipeline import score_files


rule evaluate:
    input:
        scores=score_files(P),
        splits="data/processed/splits.json",
        code="src/shiftad/evaluate",
    output:
        table="results/metrics/scenarios.csv",
        records="results/metrics/scenarios.json",
        summary="results/metrics/summary.json",
        roc="results/plots/roc.csv",
        predictions=directory("results/predictions"),
        heatmaps=directory("results/heatmaps"),
    params:
        scenarios={k: v.model_dump() for k, v in P.scenarios.items()},
        evaluation=P.evaluation.model_dump(),
    log:
        "logs/evaluate.log",
    shell:
        "shiftad evaluate {PARAMS} 2> {log}"
