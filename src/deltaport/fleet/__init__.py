"""Fleet state: devices, images, device images, bundles, deployment sets, events."""
