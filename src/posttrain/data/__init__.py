"""Data: loading TRL-format rows (`formats`), checking them (`validate`), tokenising SFT rows with
chat templates and loss masks (`chat`, `dataset`), batching with padding or padding-free packing
(`collators`), and a human-readable view of what gets trained (`inspect`)."""
