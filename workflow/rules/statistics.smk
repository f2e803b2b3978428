# Bootstrap CIs, paired tests, breakdowns, robustness curves and error lists (one job).
rule statistics:
    input:
        images=image_inputs(P),
        scores=score_files(P, [P.reference_seed]),  # the comparisons are the reference run's; seeds.csv has the rest
        splits=all_splits_inputs(P),
        table="results/metrics/scenarios.csv",
        seeds="results/metrics/seeds.csv",
        predictions="results/predictions",
        robustness=expand("results/robustness/{detector}/{category}.npz", detector=P.robustness.detectors, category=P.categories),
        code=local(source_files("src/shiftad/statistics")),
    output:
        intervals=report("results/statistics/intervals.csv", caption="../report/intervals.rst", category="Statistics"),
        comparisons=report("results/statistics/comparisons.csv", caption="../report/comparisons.rst", category="Statistics"),
        breakdowns="results/statistics/breakdowns.csv",
        robustness="results/statistics/robustness.csv",
        errors="results/statistics/errors.csv",
        cross_shift="results/statistics/cross_shift.csv",
        headline="results/statistics/headline.json",
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        statistics=P.statistics.model_dump(),
        seed=P.seed,
    threads: P.rule_threads("statistics")
    resources:
        **P.rule_resources("statistics"),
    conda:
        "../../environment.yml"
    log:
        "logs/statistics.log",
    benchmark:
        "logs/benchmarks/statistics.tsv",
    shell:
        "shiftad statistics {params.cli} --root {params.root} --threads {threads} 2> {log}"
