"""Evaluation data, one module per concern; this package re-exports every public name, so ``data.open_dataset``,
``from mobilevit_trt.data import X`` work as they did when this was one module.

* :mod:`.datasets` -- the Dataset classes (each applies its ``preprocess``, a :class:`mobilevit_trt.preprocess.
  Preprocess`; :func:`preprocess` is the original project's transform), :func:`stratified_subset`, image folder /
  label file / LMDB reading (incl. the legacy pyarrow LMDB), :func:`open_dataset`, :class:`Subset`,
  :func:`limit_dataset`, :func:`sample_indices`, :func:`iter_batches`, :func:`progress`; the shared LMDB
  environments.
* :mod:`.lmdb_writer` -- :func:`encode_record`, :func:`write_lmdb`, :func:`verify_lmdb`, :func:`folder_to_lmdb`.
* :mod:`.default_dataset` -- the packaged digit sets, :func:`stratified_split`, :func:`make_default_dataset`,
  :func:`default_split`, :func:`default_eval_data`, :data:`DEFAULT_DATASET_DIR`.
* :mod:`.reference` -- :func:`write_reference_data` and the reference-batch format.

Settings are read where they are defined: the default dataset's folder is ``default_root()`` (the environment
variable ``MOBILEVIT_TRT_DATA_DIR``, else ``DEFAULT_DATASET_DIR``).
"""
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .datasets import (CONVERT_HINT, DEFAULT_IMG_SIZE, IMG_EXTENSIONS, KEY_FORMAT,
                       LABEL_HEADER, LMDB_FORMAT, LMDB_VERSION, BadImageError, Dataset, ImageFolderDataset,
                       LabelFileDataset, LegacyLmdbDataset, LmdbDataset, Subset, decode_image, iter_batches,
                       legacy_deserializer, limit_dataset, open_dataset, open_lmdb, preprocess, progress,
                       read_label_file, release_env, resolve_preprocess, sample_indices, scan_image_folder,
                       shared_env, split_halves, stratified_subset, with_preprocess)
from .default_dataset import (DATA_DIR_ENV, DEFAULT_DATASET_DIR, PACKAGED_SOURCES, REPO_ROOT, default_eval_data,
                              default_root, default_split,
                              load_packaged_digits, make_default_dataset, stratified_split)
from .lmdb_writer import encode_record, folder_to_lmdb, verify_lmdb, write_lmdb
from .reference import REFERENCE_BATCHES, write_reference_data

__all__ = [
    "CONVERT_HINT", "DEFAULT_IMG_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "IMG_EXTENSIONS", "KEY_FORMAT",
    "LABEL_HEADER", "LMDB_FORMAT", "LMDB_VERSION", "BadImageError", "Dataset", "ImageFolderDataset",
    "LabelFileDataset", "LegacyLmdbDataset", "LmdbDataset", "Subset", "decode_image", "iter_batches",
    "legacy_deserializer", "limit_dataset", "open_dataset", "open_lmdb", "preprocess", "progress",
    "read_label_file", "release_env", "sample_indices", "scan_image_folder", "shared_env",
    "Preprocess", "resolve_preprocess", "split_halves", "stratified_subset", "with_preprocess",
    "DATA_DIR_ENV", "DEFAULT_DATASET_DIR", "PACKAGED_SOURCES", "REPO_ROOT", "default_eval_data", "default_root",
    "default_split",
    "load_packaged_digits", "make_default_dataset", "stratified_split",
    "encode_record", "folder_to_lmdb", "verify_lmdb", "write_lmdb",
    "REFERENCE_BATCHES", "write_reference_data",
]
