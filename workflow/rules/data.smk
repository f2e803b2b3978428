rule data:
    input:
        code=source_files("src/shiftad/data"),
    output:
        raw="data/raw/source.json",  # not the folder: Snakemake would delete a downloaded archive
        manifest="data/processed/manifest.json",
    params:
        cli=PARAMS,
        dataset=P.dataset.model_dump(),
        seed=P.seed,
    threads: P.rule_threads("data")
    resources:
        **P.rule_resources("data"),
    conda:
        "../../environment.yml"
    log:
        "logs/data.log",
    shell:
        "shiftad data {params.cli} --threads {threads} 2> {log}"
