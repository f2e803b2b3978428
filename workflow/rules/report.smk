from shiftad.pipeline import kshot_files, training_inputs

# The DAG's last rule: tables, figures, gallery and report/index.html.
rule report:
    input:
        images=image_inputs(P),
        table="results/metrics/scenarios.csv",
        routing="results/metrics/routing.csv",
        statistics=rules.statistics.output,
        roc="results/plots/roc",
        pr="results/plots/pr",
        predictions="results/predictions",
        heatmaps="results/heatmaps",
        notebooks="report/notebooks",
        kshot=kshot_files(P),
        training=training_inputs(P),
        code=local(source_files("src/shiftad/report", "src/shiftad/results.py")),
    output:
        tables=directory("report/tables"),
        figures=report(directory("report/figures"), patterns=["{name}.png"], caption="../report/figures.rst", category="Figures"),
        gallery=directory("report/gallery"),
        index="report/index.html",
        markdown="report/index.md",
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        report=P.report.model_dump(),
    threads: P.rule_threads("report")
    resources:
        **P.rule_resources("report"),
    conda:
        "../../environment.yml"
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv",
    shell:
        "shiftad report {params.cli} --root {params.root} --threads {threads} --quiet 2> {log}"
