"""The math, tensors in and tensors out: the factored SVD of every head's W_q^T W_k (:mod:`.modes`), the scores
(:mod:`.scores`), LayerNorm folding (:mod:`.layernorm`), the logit decomposition (:mod:`.logits`), the streaming
top-k and anisotropy (:mod:`.topk`), the pair scores of text (:mod:`.pairs`), the preference and same-object
statistics. Nothing here loads a model, reads a file or knows the rest of the package (but its vocabulary,
:mod:`qkdissect.options`)."""
