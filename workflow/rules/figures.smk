# Every figure is a parameterised notebook (notebooks/, committed without outputs) run by papermill; the executed
# copy under results/notebooks/ is the record of how the figure was made. The notebook saves PNG + PDF with its
# provenance in the file metadata and in a .provenance.json beside them. Plotting only reads stores: restyling a
# figure never reruns an SVD.
localrules:
    crate,
    logit_terms,
    ln_folding,
    fig3,
    s1_histograms,
    s2_spectrum,
    s3_ijepa,
    fig1,
    fig4,
    gallery,
    fig5,
    s17,
    s4,
    fig2,
    fig6,


rule fig3:
    input:
        notebook=notebook("fig3_layer_cosine.ipynb"),
        scores=fig3_scores,
    output:
        png=report(
            "results/figures/fig3_{variant}_cosine.png",
            caption="../report/fig3.rst",
            category="Fig. 3 layer cosine",
            labels={"figure": "Fig. 3", "variant": "{variant}"},
        ),
        pdf="results/figures/fig3_{variant}_cosine.pdf",
        provenance="results/figures/fig3_{variant}_cosine.provenance.json",
        provenance_html=report(
            "results/figures/fig3_{variant}_cosine.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 3 ({variant})"},
        ),
        notebook="results/notebooks/fig3_{variant}_cosine.ipynb",
    params:
        config_keys=config_keys(["figures", "fig3"]),
        scores=lambda w, input: yaml_param("scores", list(input.scores)),
        styles=yaml_param("styles", model_styles(figure_models("fig3"))),
        weighted=lambda w: w.variant == "weighted",
    wildcard_constraints:
        variant="weighted|unweighted",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig3_{variant}_cosine.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.scores:q}",
            "-y {params.styles:q}",
            "-p weighted {params.weighted}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s1_histograms:
    input:
        notebook=notebook("s1_cosine_histograms.ipynb"),
        scores="results/scores/{model}.zarr",
    output:
        png=report(
            "results/figures/s1_cosine_histograms_{model}.png",
            caption="../report/s1.rst",
            category="Fig. S1 cosine histograms",
            labels={"figure": "Fig. S1", "model": "{model}"},
        ),
        pdf="results/figures/s1_cosine_histograms_{model}.pdf",
        provenance="results/figures/s1_cosine_histograms_{model}.provenance.json",
        provenance_html=report(
            "results/figures/s1_cosine_histograms_{model}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S1 ({model})"},
        ),
        notebook="results/notebooks/s1_cosine_histograms_{model}.ipynb",
    params:
        config_keys=config_keys(["figures", "s1"]),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s1_cosine_histograms_{model}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p scores {input.scores:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s2_spectrum:
    input:
        notebook=notebook("s2_spectrum_grid.ipynb"),
        modes="results/modes/{model}.zarr",
        scores="results/scores/{model}.zarr",
    output:
        png=report(
            "results/figures/s2_spectrum_grid_{model}.png",
            caption="../report/s2.rst",
            category="Fig. S2 spectrum grid",
            labels={"figure": "Fig. S2", "model": "{model}"},
        ),
        pdf="results/figures/s2_spectrum_grid_{model}.pdf",
        provenance="results/figures/s2_spectrum_grid_{model}.provenance.json",
        provenance_html=report(
            "results/figures/s2_spectrum_grid_{model}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S2 ({model})"},
        ),
        notebook="results/notebooks/s2_spectrum_grid_{model}.ipynb",
    params:
        config_keys=config_keys(["figures", "s2"]),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s2_spectrum_grid_{model}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p modes {input.modes:q}",
            "-p scores {input.scores:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s3_ijepa:
    input:
        unpack(s3_scores),
        notebook=notebook("s3_ijepa.ipynb"),
    output:
        png=report(
            "results/figures/s3_ijepa_encoder_predictor.png",
            caption="../report/s3.rst",
            category="Fig. S3 I-JEPA",
            labels={"figure": "Fig. S3"},
        ),
        pdf="results/figures/s3_ijepa_encoder_predictor.pdf",
        provenance="results/figures/s3_ijepa_encoder_predictor.provenance.json",
        provenance_html=report(
            "results/figures/s3_ijepa_encoder_predictor.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S3"},
        ),
        notebook="results/notebooks/s3_ijepa_encoder_predictor.ipynb",
    params:
        config_keys=config_keys(["figures", "s3"]),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s3_ijepa_encoder_predictor.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p encoder {input.encoder:q}",
            "-p predictor {input.predictor:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule fig1:
    input:
        notebook=notebook("mode_gallery.ipynb"),
        stores=gallery_inputs(config["figures"]["fig1"]),
    output:
        png=report(
            "results/figures/fig1_example_modes.png",
            caption="../report/fig1.rst",
            category="Fig. 1 example modes",
            labels={"figure": "Fig. 1"},
        ),
        pdf="results/figures/fig1_example_modes.pdf",
        provenance="results/figures/fig1_example_modes.provenance.json",
        provenance_html=report(
            "results/figures/fig1_example_modes.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 1"},
        ),
        notebook="results/notebooks/fig1_example_modes.ipynb",
    params:
        config_keys=config_keys(["figures", "fig1"]),
        rows=yaml_param("rows", gallery_rows(config["figures"]["fig1"])),
        k=config["figures"]["gallery_k"],
        title="Fig. 1: example modes",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig1_example_modes.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.rows:q}",
            "-p auto contrast",
            "-p k {params.k}",
            "-p title {params.title:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule fig4:
    input:
        notebook=notebook("mode_gallery.ipynb"),
        stores=gallery_inputs(config["figures"]["fig4"]),
    output:
        png=report(
            "results/figures/fig4_top_images.png",
            caption="../report/fig4.rst",
            category="Fig. 4 top images",
            labels={"figure": "Fig. 4"},
        ),
        pdf="results/figures/fig4_top_images.pdf",
        provenance="results/figures/fig4_top_images.provenance.json",
        provenance_html=report(
            "results/figures/fig4_top_images.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 4"},
        ),
        notebook="results/notebooks/fig4_top_images.ipynb",
    params:
        config_keys=config_keys(["figures", "fig4"], ["figures", "gallery_k"]),
        rows=yaml_param("rows", gallery_rows(config["figures"]["fig4"])),
        k=config["figures"]["gallery_k"],
        title="Fig. 4: top images per mode",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig4_top_images.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.rows:q}",
            "-p auto spread",
            "-p k {params.k}",
            "-p title {params.title:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule gallery:
    input:
        notebook=notebook("mode_gallery.ipynb"),
        stores=lambda w: gallery_inputs(config["figures"]["galleries"][w.name]),
    output:
        png=report(
            "results/figures/gallery_{name}.png",
            caption="../report/gallery.rst",
            category="S5-S16 galleries",
            labels={"figure": "gallery {name}"},
        ),
        pdf="results/figures/gallery_{name}.pdf",
        provenance="results/figures/gallery_{name}.provenance.json",
        provenance_html=report(
            "results/figures/gallery_{name}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "gallery {name}"},
        ),
        notebook="results/notebooks/gallery_{name}.ipynb",
    params:
        config_keys=config_keys(["figures", "galleries", "{name}"], ["figures", "gallery_k"]),
        rows=lambda w: yaml_param("rows", gallery_rows(config["figures"]["galleries"][w.name])),
        k=config["figures"]["gallery_k"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/gallery_{name}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.rows:q}",
            "-p auto spread",
            "-p k {params.k}",
            "-p title {wildcards.name:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule fig5:
    input:
        unpack(lambda w: figure_model_stores(config["figures"]["fig5"]["model"])),
        notebook=notebook("image_modes.ipynb"),
    output:
        png=report(
            "results/figures/fig5_image_modes.png",
            caption="../report/fig5.rst",
            category="Fig. 5 one image",
            labels={"figure": "Fig. 5"},
        ),
        pdf="results/figures/fig5_image_modes.pdf",
        provenance="results/figures/fig5_image_modes.provenance.json",
        provenance_html=report(
            "results/figures/fig5_image_modes.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 5"},
        ),
        notebook="results/notebooks/fig5_image_modes.ipynb",
    params:
        config_keys=config_keys(["figures", "fig5"]),
        image=lambda w: config["figures"]["fig5"]["image"],
        layer_heads=lambda w: yaml_param("layer_heads", config["figures"]["fig5"]["layer_heads"]),
        n_modes=lambda w: config["figures"]["fig5"]["n_modes"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig5_image_modes.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p modes_store {input.modes:q}",
            "-p scores_store {input.scores:q}",
            "-p projections_store {input.projections:q}",
            "-p image {params.image:q}",
            "-y {params.layer_heads:q}",
            "-p n_modes {params.n_modes}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s17:
    input:
        unpack(lambda w: figure_model_stores(config["figures"]["s17"][w.name]["model"])),
        notebook=notebook("image_top.ipynb"),
    output:
        png=report(
            "results/figures/s17_{name}.png",
            caption="../report/s17.rst",
            category="S17-S19 one image and top images",
            labels={"figure": "S17-S19 {name}"},
        ),
        pdf="results/figures/s17_{name}.pdf",
        provenance="results/figures/s17_{name}.provenance.json",
        provenance_html=report(
            "results/figures/s17_{name}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "S17-S19 {name}"},
        ),
        notebook="results/notebooks/s17_{name}.ipynb",
    params:
        config_keys=config_keys(["figures", "s17", "{name}"]),
        image=lambda w: config["figures"]["s17"][w.name]["image"],
        modes=lambda w: yaml_param("modes", config["figures"]["s17"][w.name]["modes"]),
        k=config["figures"]["gallery_k"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s17_{name}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p modes_store {input.modes:q}",
            "-p scores_store {input.scores:q}",
            "-p projections_store {input.projections:q}",
            "-p image {params.image:q}",
            "-y {params.modes:q}",
            "-p k {params.k}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s4:
    input:
        notebook=notebook("s4_anisotropy.ipynb"),
        projections=lambda w: [projections_store(m) for m in s4_models()],
        scores=lambda w: [f"results/scores/{m}.zarr" for m in s4_models()],
    output:
        png=report(
            "results/figures/s4_anisotropy.png",
            caption="../report/s4.rst",
            category="Fig. S4 anisotropy",
            labels={"figure": "Fig. S4"},
        ),
        pdf="results/figures/s4_anisotropy.pdf",
        provenance="results/figures/s4_anisotropy.provenance.json",
        provenance_html=report(
            "results/figures/s4_anisotropy.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S4"},
        ),
        notebook="results/notebooks/s4_anisotropy.ipynb",
    params:
        config_keys=config_keys(["figures", "s4"]),
        projections=lambda w, input: yaml_param("projections", list(input.projections)),
        scores=lambda w, input: yaml_param("scores", list(input.scores)),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s4_anisotropy.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.projections:q}",
            "-y {params.scores:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule fig2:
    input:
        notebook=notebook("fig2_preference.ipynb"),
        preference=preference_stores,
    output:
        png=report(
            "results/figures/fig2_preference_{dataset}.png",
            caption="../report/fig2.rst",
            category="Fig. 2 attention preference",
            labels={"figure": "Fig. 2", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig2_preference_{dataset}.pdf",
        provenance="results/figures/fig2_preference_{dataset}.provenance.json",
        provenance_html=report(
            "results/figures/fig2_preference_{dataset}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 2 ({dataset})"},
        ),
        notebook="results/notebooks/fig2_preference_{dataset}.ipynb",
    params:
        config_keys=config_keys(["figures", "fig2"]),
        preference=lambda w, input: yaml_param("preference", list(input.preference)),
        example=lambda w: config["figures"]["fig2"]["example"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig2_preference_{dataset}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.preference:q}",
            "-p example {params.example}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule fig6:
    input:
        notebook=notebook("fig6_same_object.ipynb"),
        same_object=same_object_stores,
    output:
        png=report(
            "results/figures/fig6_same_object_{dataset}.png",
            caption="../report/fig6.rst",
            category="Fig. 6 same-object probability",
            labels={"figure": "Fig. 6", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig6_same_object_{dataset}.pdf",
        provenance="results/figures/fig6_same_object_{dataset}.provenance.json",
        provenance_html=report(
            "results/figures/fig6_same_object_{dataset}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 6 ({dataset})"},
        ),
        notebook="results/notebooks/fig6_same_object_{dataset}.ipynb",
    params:
        config_keys=config_keys(["figures", "fig6"]),
        same_object=lambda w, input: yaml_param("same_object", list(input.same_object)),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig6_same_object_{dataset}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.same_object:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


# Beyond the paper: does the grouping-to-contextualisation trend survive when the LayerNorm the attention sees is
# folded into W_q^T W_k? Weighted layer cosine of the raw, folded and folded-centred modes, per model.
rule ln_folding:
    input:
        notebook=notebook("ln_folding.ipynb"),
        scores=ln_folding_scores,
    output:
        png=report(
            "results/figures/ln_folding_cosine.png",
            caption="../report/ln_folding.rst",
            category="Beyond the paper",
            labels={"figure": "LayerNorm folding"},
        ),
        pdf="results/figures/ln_folding_cosine.pdf",
        provenance="results/figures/ln_folding_cosine.provenance.json",
        provenance_html=report(
            "results/figures/ln_folding_cosine.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "LayerNorm folding"},
        ),
        notebook="results/notebooks/ln_folding_cosine.ipynb",
    params:
        config_keys=config_keys(["figures", "ln_folding"]),
        scores=lambda w: yaml_param(
            "scores", {m: {f: folding_store(m, f) for f in FOLDINGS} for m in figure_models("ln_folding")}
        ),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/ln_folding_cosine.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.scores:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )

# Beyond the paper: the logit terms, the top-k modes' share and who wins the softmax, one row per model.
rule logit_terms:
    input:
        notebook=notebook("logit_terms.ipynb"),
        logits=logits_stores,
    output:
        png=report(
            "results/figures/logit_terms.png",
            caption="../report/logit_terms.rst",
            category="Beyond the paper",
            labels={"figure": "logit terms"},
        ),
        pdf="results/figures/logit_terms.pdf",
        provenance="results/figures/logit_terms.provenance.json",
        provenance_html=report(
            "results/figures/logit_terms.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "logit terms"},
        ),
        notebook="results/notebooks/logit_terms.ipynb",
    params:
        config_keys=config_keys(["figures", "logits"]),
        logits=lambda w, input: yaml_param("logits", list(input.logits)),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/logit_terms.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.logits:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )

# Beyond the paper: a text model's top passages per mode, shaded by the query and key maps.
rule text_modes:
    input:
        unpack(lambda w: {"notebook": notebook("text_modes.ipynb"), **text_modes_inputs(w.model)}),
    output:
        png=report(
            "results/figures/text_modes_{model}.png",
            caption="../report/text_modes.rst",
            category="Beyond the paper",
            labels={"figure": "text modes", "model": "{model}"},
        ),
        pdf="results/figures/text_modes_{model}.pdf",
        provenance="results/figures/text_modes_{model}.provenance.json",
        provenance_html=report(
            "results/figures/text_modes_{model}.provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "text modes", "model": "{model}"},
        ),
        notebook="results/notebooks/text_modes_{model}.ipynb",
    params:
        config_keys=config_keys(["figures", "text_modes"], ["figures", "text_k"]),
        modes=lambda w: text_modes_modes(w.model),
        k=config["figures"]["text_k"],
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/text_modes_{model}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p modes_store {input.modes:q}",
            "-p scores_store {input.scores:q}",
            "-p texts_store {input.texts:q}",
            "-y {params.modes:q}",
            "-p k {params.k}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


# The results folder as an RO-Crate (RO-Crate 1.1, Process Run Crate profile): every figure, store and weights
# manifest with its sha256, the inputs recorded in their provenance, and the action that made each.
rule crate:
    input:
        all_figures(),
    output:
        "results/ro-crate-metadata.json",
    params:
        config_keys=config_keys(),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/crate.log",
    shell:
        qkdissect("crate results > {log:q} 2>&1")
