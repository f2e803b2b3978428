from shiftad.pipeline import score_runs


rule evaluate:
    input:
        scores=[f"results/scores/{r['detector']}/{r['regime']}/{r['model']}_on_{r['data']}" for r in score_runs(P)],
        splits="data/processed/splits.json",
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
