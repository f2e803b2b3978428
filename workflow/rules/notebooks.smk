# Executes notebooks/*.ipynb with papermill and converts them to HTML; a failing cell fails the rule.
rule notebooks:
    input:
        notebooks=sorted(str(p) for p in Path("notebooks").glob("*.ipynb")),
        statistics=rules.statistics.output,
        table="results/metrics/scenarios.csv",
        splits=[splits_input(d) for d in DOMAINS],
        code="src/shiftad/notebooks.py",
    output:
        directory("report/notebooks"),
    log:
        "logs/notebooks.log",
    shell:
        "shiftad notebooks {PARAMS} --quiet 2> {log}"
