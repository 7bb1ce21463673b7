# Per-mode cosines, per-head and per-layer (weighted) averages, normalised depth, the exact null interval.
rule scores:
    input:
        modes="results/modes/{model}.zarr",
    output:
        directory("results/scores/{model}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], requests.ScoresRequest),
        options=pass_options(requests.ScoresRequest),
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
            "scores {input.modes:q} {params.options} -o {output:q} > {log:q} 2>&1",
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
