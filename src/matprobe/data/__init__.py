"""Datasets: the MAT data model, loaders (Med-MAT, manifests), images, splits, entropies."""

from matprobe.data.entropy import conditional_entropy, entropy
from matprobe.data.images import load_image, load_image_path
from matprobe.data.loaders import ValidationReport, load_dataset, validate_dataset
from matprobe.data.manifest import load_manifest, write_manifest
from matprobe.data.medmat import load_medmat, load_medmat_folder, medmat_task_level
from matprobe.data.model import FACTORS, MATDataset, Sample, Vocabulary
from matprobe.data.splits import SplitConfig, make_split, parse_triplet, relation, stratified_holdout

__all__ = [
    "FACTORS", "MATDataset", "Sample", "SplitConfig", "ValidationReport", "Vocabulary",
    "conditional_entropy", "entropy", "load_dataset", "load_image", "load_image_path",
    "load_manifest", "load_medmat", "load_medmat_folder", "make_split", "medmat_task_level", "parse_triplet",
    "relation", "stratified_holdout", "validate_dataset", "write_manifest",
]
