"""Training data: JSONL manifests, webdataset shards, paired samples, multi-modality collate, bad-sample policy.

``source -load-> raw -transform-> tensor`` per modality (through the plugins), paired with the anchor (a caption
or an image), collated with presence masks so one batch may mix samples carrying different modality subsets.
"""

from bind.data.bad_samples import BAD_SAMPLES_FILE, BadSampleLog, summarize
from bind.data.collate import PairCollator
from bind.data.dataset import PairedDataset, PairSpec, build_pair_sample
from bind.data.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest
from bind.data.sampler import ResumableSampler
from bind.data.validate import ValidationReport, validate_manifest

__all__ = [
    "BAD_SAMPLES_FILE",
    "BadSampleLog",
    "ManifestError",
    "ManifestRecord",
    "PairCollator",
    "PairSpec",
    "PairedDataset",
    "ResumableSampler",
    "ValidationReport",
    "build_pair_sample",
    "read_manifest",
    "summarize",
    "validate_manifest",
    "write_manifest",
]
