"""The end-to-end demo (`deltaport demo`) and the real services it starts."""
