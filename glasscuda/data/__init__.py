"""Glass images and their defect labels: the synthetic generator and the dataset loader."""

from glasscuda.data.dataset import (
    DEFAULT_CLASS_MAP,
    DatasetError,
    DatasetWarning,
    GlassDataset,
    load_split,
    stratified_split,
)
from glasscuda.data.synthetic import (
    CLASS_NAMES,
    RenderedGlass,
    default_cache_dir,
    generate_synthetic,
    render_glass,
    synthetic_dataset,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_CLASS_MAP",
    "DatasetError",
    "DatasetWarning",
    "GlassDataset",
    "RenderedGlass",
    "default_cache_dir",
    "generate_synthetic",
    "load_split",
    "render_glass",
    "stratified_split",
    "synthetic_dataset",
]
