"""What transformers says when a checkpoint and the model class that loads it differ, said the way a QK analysis
needs it.

transformers prints a LOAD REPORT table on every such load: the task heads a checkpoint has and the base model does
not (``classifier.*`` UNEXPECTED) and the pooler the base model has and the checkpoint does not (``pooler.*``
MISSING, "newly initialized"). Neither is read by the analysis: W_q, W_k and the passes use the embeddings, the
blocks and their norms. So the table is kept from the terminal (:func:`quiet_load_report`), the keys are recorded
in the weights' provenance (:func:`load_report`), and one warning line is said only when a weight the analysis
reads was not in the checkpoint (:func:`random_weights`): then that weight is random and the numbers mean nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("qkdissect")

#: the parts of a Hugging Face parameter's name that mark what no QK analysis reads: task heads, poolers,
#: projection heads, decoders of pretraining objectives
HEADS = frozenset(
    {
        "pooler",
        "classifier",
        "distillation_classifier",
        "cls",
        "head",
        "lm_head",
        "score",
        "qa_outputs",
        "visual_projection",
        "text_projection",
        "logit_scale",
        "decoder",
    }
)
#: the most keys of each kind a provenance lists (the counts are complete)
MAX_KEYS = 50
#: the logger transformers writes its load report to
_TRANSFORMERS_LOGGER = "transformers.modeling_utils"


class _KeepReport(logging.Filter):
    """Holds back transformers' LOAD REPORT records (kept in ``reports``); passes every other record."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" in message:
            self.reports.append(message)
            return False
        return True


@contextmanager
def quiet_load_report() -> Iterator[list[str]]:
    """Within: transformers' LOAD REPORT table is not printed; the list yielded receives its text. Should the load
    fail, the table is logged at debug level (``--debug`` shows it)."""
    keep = _KeepReport()
    logger = logging.getLogger(_TRANSFORMERS_LOGGER)
    logger.addFilter(keep)
    try:
        yield keep.reports
    except BaseException:
        for text in keep.reports:
            log.debug("%s", text)
        raise
    finally:
        logger.removeFilter(keep)


def is_head(key: str) -> bool:
    """Whether a parameter of a Hugging Face model belongs to what no QK analysis reads (see :data:`HEADS`)."""
    return any(part in HEADS for part in key.split("."))


def load_report(info: dict[str, Any]) -> dict[str, Any] | None:
    """The provenance's record of a load (``output_loading_info`` of ``from_pretrained``): the keys the checkpoint
    has and the model does not (``unexpected``), those the model has and the checkpoint does not (``missing``:
    initialised at random) and those of another shape (``mismatched``), each sorted, at most :data:`MAX_KEYS`, with
    their counts and the missing ones the analysis reads (``missing_read``). None when they agree."""
    kinds = {
        "missing": sorted(map(str, info.get("missing_keys") or ())),
        "unexpected": sorted(map(str, info.get("unexpected_keys") or ())),
        "mismatched": sorted(
            str(k[0] if isinstance(k, tuple | list) else k) for k in info.get("mismatched_keys") or ()
        ),
    }
    if not any(kinds.values()):
        return None
    read = [k for k in kinds["missing"] + kinds["mismatched"] if not is_head(k)]
    return {
        **{kind: keys[:MAX_KEYS] for kind, keys in kinds.items()},
        "counts": {kind: len(keys) for kind, keys in kinds.items()},
        "missing_read": read[:MAX_KEYS],
        "note": "heads and poolers (unexpected or missing) are not read by the analysis; missing_read are",
    }


def _key(mismatched: Any) -> str:
    """A mismatched key's name (transformers lists them as (name, checkpoint shape, model shape))."""
    return str(mismatched[0] if isinstance(mismatched, tuple | list) else mismatched)


def random_weights(report: dict[str, Any] | None, what: str) -> str | None:
    """One line when weights the analysis reads were not in the checkpoint (logged as a warning), else None."""
    read = (report or {}).get("missing_read") or []
    if not read:
        return None
    more = f" and {len(read) - 2} more" if len(read) > 2 else ""
    line = (
        f"{what}: {len(read)} weights the analysis reads are not in its checkpoint and were initialised at random "
        f"({', '.join(read[:2])}{more}): its modes and maps would mean nothing; is it the right checkpoint for "
        "this model class?"
    )
    log.warning("%s", line)
    return line
