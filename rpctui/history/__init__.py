"""Runs kept: each run recorded as JSONL as it happens, read back, summarised. Imports the
run model and paths; never the engine or the faces."""
