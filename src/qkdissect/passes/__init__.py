"""Running models: over their weights (modes, :mod:`.weights`; their scores, :mod:`.scores`, without torch) and
over data, one forward pass per batch with hooks on the tokens each layer's attention sees (:mod:`.hooks`): token
projections and the top images per mode (:mod:`.projections`), logit terms (:mod:`.logits`), attention preference
(:mod:`.preference`), same-object probability (:mod:`.same_object`), text (:mod:`.text`), and the maps every image
and text figure draws (:mod:`.maps`). Each pass writes one store."""
