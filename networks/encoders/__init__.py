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
from networks.encoders import convnext  # noqa: F401
from networks.encoders import csn  # noqa: F401
from networks.encoders import efficientnet  # noqa: F401
from networks.encoders import pvt_v2  # noqa: F401
from networks.encoders import resnet  # noqa: F401
from networks.encoders import resnet_d  # noqa: F401
from networks.encoders import unet  # noqa: F401

__all__ = ["ENCODERS", "build_encoder", "check_encoder", "load_encoder_weights", "register_encoder"]
