rule split:
    input:
        manifest="data/processed/manifest.json",
        code=local(source_files("src/shiftad/split.py")),
    output:
        "data/processed/splits.json",
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        split=P.split.model_dump(),
        seed=P.seed,
    threads: P.rule_threads("split")
    resources:
        **P.rule_resources("split"),
    conda:
        "../../environment.yml"
    log:
        "logs/split.log",
    benchmark:
        "logs/benchmarks/split.tsv",
    shell:
        "shiftad split {params.cli} --root {params.root} --threads {threads} 2> {log}"
