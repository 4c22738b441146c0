"""Evaluation data, one module per concern; this package re-exports every public name, so ``data.open_dataset``,
``from mobilevit_trt.data import X`` and ``data.DEFAULT_DATASET_DIR`` work as they did when this was one module.

* :mod:`.datasets` -- preprocessing, the Dataset classes, image folder / label file / LMDB reading (incl. the
  legacy pyarrow LMDB), :func:`open_dataset`, :class:`Subset`, :func:`limit_dataset`, :func:`sample_indices`,
  :func:`iter_batches`, :func:`progress`; the shared LMDB environments.
* :mod:`.lmdb_writer` -- :func:`encode_record`, :func:`write_lmdb`, :func:`verify_lmdb`, :func:`folder_to_lmdb`.
* :mod:`.default_dataset` -- the packaged digit sets, :func:`stratified_split`, :func:`make_default_dataset`,
  :func:`default_split`, :func:`default_eval_data`, :data:`DEFAULT_DATASET_DIR`.
* :mod:`.reference` -- :func:`write_reference_data` and the reference-batch format.

Assigning a re-exported name here (``data.DEFAULT_DATASET_DIR = path``, ``monkeypatch.setattr(data, ...)``) also
assigns it in the submodules that hold the same object, so the code that reads it sees the new value, as it did
in the single module.
"""
import sys
import types

from . import datasets, default_dataset, lmdb_writer, reference
from .datasets import (CONVERT_HINT, DEFAULT_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, KEY_FORMAT,
                       LABEL_HEADER, LMDB_FORMAT, LMDB_VERSION, BadImageError, Dataset, ImageFolderDataset,
                       LabelFileDataset, LegacyLmdbDataset, LmdbDataset, Subset, decode_image, iter_batches,
                       legacy_deserializer, limit_dataset, open_dataset, open_lmdb, preprocess, progress,
                       read_label_file, release_env, sample_indices, scan_image_folder, shared_env)
from .default_dataset import (DEFAULT_DATASET_DIR, PACKAGED_SOURCES, REPO_ROOT, default_eval_data, default_split,
                              load_packaged_digits, make_default_dataset, stratified_split)
from .lmdb_writer import encode_record, folder_to_lmdb, verify_lmdb, write_lmdb
from .reference import REFERENCE_BATCHES, write_reference_data

__all__ = [
    "CONVERT_HINT", "DEFAULT_IMG_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "IMG_EXTENSIONS", "KEY_FORMAT",
    "LABEL_HEADER", "LMDB_FORMAT", "LMDB_VERSION", "BadImageError", "Dataset", "ImageFolderDataset",
    "LabelFileDataset", "LegacyLmdbDataset", "LmdbDataset", "Subset", "decode_image", "iter_batches",
    "legacy_deserializer", "limit_dataset", "open_dataset", "open_lmdb", "preprocess", "progress",
    "read_label_file", "release_env", "sample_indices", "scan_image_folder", "shared_env",
    "DEFAULT_DATASET_DIR", "PACKAGED_SOURCES", "REPO_ROOT", "default_eval_data", "default_split",
    "load_packaged_digits", "make_default_dataset", "stratified_split",
    "encode_record", "folder_to_lmdb", "verify_lmdb", "write_lmdb",
    "REFERENCE_BATCHES", "write_reference_data",
]

_SUBMODULES = (datasets, lmdb_writer, default_dataset, reference)
_MISSING = object()


class _Package(types.ModuleType):
    """This package's module type: an assignment to a re-exported name reaches the submodules that use it."""

    def __setattr__(self, name, value):
        old = self.__dict__.get(name, _MISSING)
        if name in __all__ and old is not _MISSING:
            for module in _SUBMODULES:
                if module.__dict__.get(name, _MISSING) is old:
                    setattr(module, name, value)
        types.ModuleType.__setattr__(self, name, value)


sys.modules[__name__].__class__ = _Package
