# Per-mode cosines, per-head and per-layer (weighted) averages, normalised depth, the exact null interval.
rule scores:
    input:
        modes="results/modes/{model}.zarr",
    output:
        directory("results/scores/{model}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], ["analysis", "released_code"], ["analysis", "null_level"], ["analysis", "null_rtol"]),
        released_code="--released-code" if config["analysis"]["released_code"] else "",
        level=config["analysis"]["null_level"],
        null_rtol=config["analysis"]["null_rtol"],
    threads: 1
    resources:
        mem_mb=config["resources"]["scores"]["mem_mb"],
        runtime=config["resources"]["scores"]["runtime"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/scores/{model}.log",
    benchmark:
        "results/benchmarks/scores/{model}.tsv"
    shell:
        qkdissect(
            "scores {input.modes:q} --level {params.level:q} --null-rtol {params.null_rtol:q} {params.released_code} "
            "-o {output:q} > {log:q} 2>&1",
        )


use rule scores as scores_folded with:
    input:
        modes="results/modes_ln/{folding}/{model}.zarr",
    output:
        directory("results/scores_ln/{folding}/{model}.zarr"),
    log:
        "results/logs/scores_ln/{folding}/{model}.log",
    benchmark:
        "results/benchmarks/scores_ln/{folding}/{model}.tsv"
