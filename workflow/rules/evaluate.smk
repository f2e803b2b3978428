from shiftad.pipeline import score_files


rule evaluate:
    input:
        images=image_inputs(P),
        scores=score_files(P),
        splits=all_splits_inputs(P),
        code=local(source_files("src/shiftad/evaluate")),
    output:
        table="results/metrics/scenarios.csv",
        records="results/metrics/scenarios.json",
        seeds="results/metrics/seeds.csv",
        effects="results/metrics/shift_effects.csv",
        routing="results/metrics/routing.csv",
        summary="results/metrics/summary.json",
        roc=directory("results/plots/roc"),
        pr=directory("results/plots/pr"),
        predictions=directory("results/predictions"),
        heatmaps=directory("results/heatmaps"),
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        scenarios={k: v.model_dump() for k, v in P.scenarios.items()},
        evaluation=P.evaluation.model_dump(),
        seeds=P.seeds,
    threads: P.rule_threads("evaluate")
    resources:
        **P.rule_resources("evaluate"),
    conda:
        "../../environment.yml"
    log:
        "logs/evaluate.log",
    benchmark:
        "logs/benchmarks/evaluate.tsv",
    shell:
        "shiftad evaluate {params.cli} --root {params.root} --threads {threads} 2> {log}"
