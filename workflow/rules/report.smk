rule report:
    input:
        table="results/metrics/scenarios.csv",
        roc="results/plots/roc.csv",
        predictions="results/predictions",
        heatmaps="results/heatmaps",
        code="src/shiftad/report",
    output:
        tables=directory("report/tables"),
        figures=directory("report/figures"),
        index="report/index.md",
    params:
        report=P.report.model_dump(),
    log:
        "logs/report.log",
    shell:
        "shiftad report {PARAMS} 2> {log}"
