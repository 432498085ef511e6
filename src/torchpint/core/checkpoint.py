"""Kept for old imports: checkpoints live on the floor, :mod:`torchpint.runtime.checkpoint`."""

from torchpint.runtime.checkpoint import (
    RESUME_HINT,
    CheckpointError,
    CheckpointMismatchError,
    atomic_save,
    check_fingerprint,
    digest_json,
    fingerprint_diff,
    load_checkpoint,
    plain,
    rank_file,
    rank_files,
    tensor_digest,
)

__all__ = ["RESUME_HINT", "CheckpointError", "CheckpointMismatchError", "atomic_save",
           "check_fingerprint", "digest_json", "fingerprint_diff", "load_checkpoint", "plain",
           "rank_file", "rank_files", "tensor_digest"]
