rule split:
    input:
        manifest="data/processed/manifest.json",
        code=source_files("src/shiftad/split.py"),
    output:
        "data/processed/splits.json",
    params:
        split=P.split.model_dump(),
        seed=P.seed,
    log:
        "logs/split.log",
    shell:
        "shiftad split {PARAMS} 2> {log}"
