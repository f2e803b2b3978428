rule data:
    input:
        code=source_files("src/shiftad/data"),
    output:
        raw="data/raw/source.json",  # not the folder: Snakemake would delete a downloaded archive
        manifest="data/processed/manifest.json",
    params:
        dataset=P.dataset.model_dump(),
        seed=P.seed,
    log:
        "logs/data.log",
    shell:
        "shiftad data {PARAMS} 2> {log}"
