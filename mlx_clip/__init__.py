"""mlx_clip: CLIP and SigLIP in Apple MLX, fine-tuned on your own images and their metadata.

Public surface: `load`, `export_hf`, `CLIP`, `SigLIP`, `CLIPConfig`, `InputError`.
"""

from ._blas import use_fast_blas

use_fast_blas()  # must run before mlx.core is first imported (Linux only)

from .models.clip import CLIP, SigLIP, load  # noqa: E402
from .models.config import CLIPConfig  # noqa: E402
from .errors import InputError  # noqa: E402
from .outputs.export import export_hf  # noqa: E402

__all__ = ["CLIP", "CLIPConfig", "InputError", "SigLIP", "export_hf", "load"]
__version__ = "0.1.0"
