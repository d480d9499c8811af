"""The trainer: train, convert, sign, evaluate, fine-tune and publish model bundles.

TensorFlow is imported only when a function that needs it runs, so `import jetson_trainer`
stays cheap (the key functions need only `cryptography`).
"""

from .api import build_bundle, finetune_model, generate_keypair
from .errors import TrainerError

__version__ = "0.1.0"

__all__ = [
    "TrainerError",
    "__version__",
    "build_bundle",
    "finetune_model",
    "generate_keypair",
]
