"""spt-cli: Selective Prompt Tuning (SPT) and SPT-DARTS, with prompt-tuning baselines."""

__version__ = "0.1.0"
