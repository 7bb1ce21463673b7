# The paper's checkable claims (its section 5) evaluated on this run's stores, with a stated rule each: a JSON file,
# a page in the report, a provenance sidecar audited like a figure's (qkdissect.core.claims).


def claims_stores():
    """role -> stores: the Fig. 3 image models' scores, the S4 models' projections, Fig. 2's and Fig. 6's first
    mask dataset, and the S3 encoder and predictor."""
    fig = config["figures"]
    stores = {"scores": [f"results/scores/{m}.zarr" for m in figure_models("fig3") if m in IMAGE_MODELS]}
    stores["projections"] = [projections_store(m) for m in figure_models("s4")]
    for key, kind in (("fig2", "preference"), ("fig6", "same_object")):
        if fig[key]:
            dataset = fig[key]["datasets"][0]
            stores[kind] = [f"results/{kind}/{m}/{dataset}.zarr" for m in mask_figure_models(key)]
    if fig["s3"]:
        stores["s3"] = [f"results/scores/{fig['s3'][k]}.zarr" for k in ("encoder", "predictor")]
    return stores


CLAIMS_STORES = claims_stores()


rule claims:
    localrule: True
    input:
        **CLAIMS_STORES,
    output:
        json="results/claims/claims.json",
        html=report(
            "results/claims/claims.html",
            caption="../report/claims.rst",
            category="The paper's claims",
            labels={"page": "claims"},
        ),
        provenance="results/claims/claims.provenance.json",
    params:
        config_keys=config_keys(["figures", "fig3"], ["figures", "s4"], ["figures", "fig2"], ["figures", "fig6"],
                                ["figures", "s3"]),
        stores=json.dumps(CLAIMS_STORES, separators=(",", ":")),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/claims.log",
    shell:
        qkdissect("claims --stores {params.stores:q} -o {output.json:q} > {log:q} 2>&1")
