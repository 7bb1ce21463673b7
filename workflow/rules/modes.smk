# SVD of every head's W_q^T W_k, batched over layers and heads (float64; on the GPU when analysis.device is cuda).
rule modes:
    input:
        manifest="results/weights/{model}.json",
    output:
        directory("results/modes/{model}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], requests.ModesRequest),
        spec=model_spec,
        options=pass_options(requests.ModesRequest),
        device=config["analysis"]["device"],
        folding=lambda w: getattr(w, "folding", "raw"),
    threads: modes_resources("threads")
    resources:
        mem_mb=modes_mem_mb,
        runtime=modes_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/modes/{model}.log",
    benchmark:
        "results/benchmarks/modes/{model}.tsv"
    shell:
        qkdissect(
            "modes {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--device {params.device:q} {params.options} --folding {params.folding:q} -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


# Beyond the paper: the LayerNorm-aware interaction diag(gamma) W_q^T W_k diag(gamma) ("folded"), and with the
# norm's centring ("folded-centred"), stored beside the paper's raw modes, never instead of them. An RMS norm (Llama,
# SmolLM2) folds its gains and has no centring: its folded-centred store holds its folded modes and says so.
use rule modes as modes_folded with:
    output:
        directory("results/modes_ln/{folding}/{model}.zarr"),
    log:
        "results/logs/modes_ln/{folding}/{model}.log",
    benchmark:
        "results/benchmarks/modes_ln/{folding}/{model}.tsv"
