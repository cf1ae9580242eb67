"""Feature encoders behind one contract and one registry (:mod:`networks.encoders.base`).

Importing this package registers every encoder family; add a new family as a module here and import it below.
"""

from networks.encoders.base import (
    ENCODERS,
    FeatureEncoder,
    build_encoder,
    check_encoder,
    load_encoder_weights,
    register_encoder,
)
from networks.encoders import csn, pvt_v2, resnet_d  # noqa: F401  (importing a family registers it)

__all__ = ["ENCODERS", "FeatureEncoder", "build_encoder", "check_encoder", "load_encoder_weights", "register_encoder"]
