"""Dataset registry, corrected dataset readers and procedurally generated scenes."""
