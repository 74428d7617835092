"""KVM/libvirt through libvirt-python and libnbd, shared by the libvirt source and restore.

Concepts: :mod:`.connection` (opening a hypervisor connection, looking up a domain, the disks its XML
declares), :mod:`.nbd` (reading a disk exported over NBD: block status and prefetching reads).
Both import their bindings lazily, so safehold imports without them.
"""
