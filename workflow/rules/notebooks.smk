# Executes notebooks/*.ipynb with papermill and converts them to HTML; a failing cell fails the rule.
rule notebooks:
    input:
        images=image_inputs(P),
        notebooks=local(sorted(str(p) for p in Path("notebooks").glob("*.ipynb"))),
        statistics=rules.statistics.output,
        table="results/metrics/scenarios.csv",
        routing="results/metrics/routing.csv",
        roc="results/plots/roc",
        pr="results/plots/pr",
        predictions="results/predictions",
        splits=all_splits_inputs(P),
        code=local(source_files("src/shiftad/notebooks.py", "src/shiftad/results.py", "src/shiftad/report")),
    output:
        directory("report/notebooks"),
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        study={"detectors": P.detectors, "categories": P.categories, "scenarios": list(P.scenarios)},
    threads: P.rule_threads("notebooks")
    resources:
        **P.rule_resources("notebooks"),
    conda:
        "../../environment.yml"
    log:
        "logs/notebooks.log",
    benchmark:
        "logs/benchmarks/notebooks.tsv",
    shell:
        "shiftad notebooks {params.cli} --root {params.root} --threads {threads} --quiet 2> {log}"
