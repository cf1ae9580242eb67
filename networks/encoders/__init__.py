"""Feature encoders behind one contract and one registry (:mod:`networks.encoders.base`).

Importing this package registers every encoder family; add a new family as a module here and import it below
(one line per family, so that families added on different branches merge without conflicts).
"""

from networks.encoders.base import (
    ENCODERS,
    build_encoder,
    check_encoder,
    load_encoder_weights,
    register_encoder,
)
from networks.encoders import convnext, csn, efficientnet, pvt_v2, resnet, resnet_d, unet  # noqa: F401  (importing registers)

__all__ = ["ENCODERS", "build_encoder", "check_encoder", "load_encoder_weights", "register_encoder"]
