rule shift:
    input:
        manifest="data/processed/manifest.json",
        splits="data/processed/splits.json",
        code=source_files("src/shiftad/shift.py"),
    output:
        images=directory("data/shifted"),
        splits="data/processed/shifted_splits.json",
    params:
        shift=P.shift.model_dump(),
        seed=P.seed,
    threads: P.threads
    log:
        "logs/shift.log",
    shell:
        "shiftad shift {PARAMS} 2> {log}"
