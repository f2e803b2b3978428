rule data:
    input:
        user_images=user_image_inputs(P),  # folder / CSV data: the user's folder
        code=local(source_files("src/shiftad/data")),
    output:
        raw="data/raw/source.json",  # not data/raw: Snakemake would delete a downloaded archive
        manifest="data/processed/manifest.json",
        **data_outputs(P),  # synthetic / MVTec: the image folder it writes (dataset.root)
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        dataset=P.dataset.model_dump(),
        seed=P.seed,
    threads: P.rule_threads("data")
    resources:
        **P.rule_resources("data"),
    conda:
        "../../environment.yml"
    log:
        "logs/data.log",
    benchmark:
        "logs/benchmarks/data.tsv",
    shell:
        "shiftad data {params.cli} --root {params.root} --threads {threads} 2> {log}"
