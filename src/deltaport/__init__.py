"""deltaport: deploy container images to edge devices over slow, intermittent links.

The package is split by job (see docs/architecture.md):

- ``deltaport.oci``     images and the transports that hold them (docker-archive, oci, registry)
- ``deltaport.delta``   signatures, source ranking, patch build and streaming patch apply
- ``deltaport.bundle``  the signed bundle file that carries patches to a device
- ``deltaport.cli``     the ``deltaport`` command, thin over the parts above
"""

__version__ = "0.1.0"
