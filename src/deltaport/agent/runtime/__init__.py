"""The device runtime: run the signed desired manifest, gate it on health, roll back,
report what runs, keep the disk bounded (docs/device-runtime.md)."""
