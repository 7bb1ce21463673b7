# The paper's checkable claims (its section 5) evaluated on this run's stores, with a stated rule each: a JSON file,
# a page in the report, a provenance sidecar audited like a figure's (qkdissect.core.claims).


# (and our own claim A1 on the ablation stores, workflow/rules/ablation.smk)
CLAIMS_STORES = {**claims_stores(), **ABLATION_CLAIMS}


rule claims:
    localrule: True
    input:
        **CLAIMS_STORES,
    output:
        json="results/claims/claims.json",
        html=report(
            "results/claims/claims.html",
            caption="../report/claims.rst",
            category=REPORT_CATEGORIES[CLAIMS_CATEGORY],
            labels={"page": "claims"},
        ),
        provenance="results/claims/claims.provenance.json",
    params:
        config_keys=config_keys(["figures", "fig3"], ["figures", "s4"], ["figures", "fig2"], ["figures", "fig6"],
                                ["figures", "s3"], ["figures", "ablation"]),
        stores=lambda wildcards, input: json.dumps(stores_of(CLAIMS_STORES, input), separators=(",", ":")),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/claims.log",
    shell:
        qkdissect("claims --stores {params.stores:q} -o {output.json:q} > {log:q} 2>&1")
