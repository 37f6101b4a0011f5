"""Training objectives as pure functions: tensors in, scalar out.

One file per family: ``token_weighted`` (MLE, MixCE, TaiLr, DFT), ``oracle`` (objectives that need
the true distribution P, for known-P benchmark tasks), ``sequencematch`` (and ``sequencematch_parts``, the same
loss split by term and kind of slot), ``attribute``.
"""

from seqlevel.losses.attribute import attribute_loss, cat_loss, consistency_loss
from seqlevel.losses.sequencematch import bc_loss, sequencematch_loss
from seqlevel.losses.sequencematch_parts import sequencematch_parts
from seqlevel.losses.token_weighted import (
    dft_loss,
    mixce_loss,
    mle_loss,
    tailr_loss,
    token_weighted_loss,
)

__all__ = ["mle_loss", "mixce_loss", "tailr_loss", "dft_loss", "token_weighted_loss",
           "sequencematch_loss", "bc_loss", "sequencematch_parts", "attribute_loss", "cat_loss", "consistency_loss"]
