"""Data: loading TRL-format rows (`formats`), checking them (`validate`), tokenising SFT rows with
chat templates and loss masks (`chat`, `masks`, `dataset`), batching with padding or padding-free
packing (`collators`), and a human-readable view of what gets trained (`inspect`)."""
from .chat import Drop, Encoded, encode_prompt, encode_sft_row
from .collators import pack_collate, pack_into_bins, pad_collate
from .dataset import Stats, build_sft_examples
from .errors import DataError, Source
from .formats import Rows, load_rows
from .inspect import inspect_rows
from .validate import validate_rows

__all__ = ["DataError", "Drop", "Encoded", "Rows", "Source", "Stats", "build_sft_examples", "encode_prompt",
           "encode_sft_row", "inspect_rows", "load_rows", "pack_collate", "pack_into_bins", "pad_collate",
           "validate_rows"]
