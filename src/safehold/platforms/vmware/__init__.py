"""VMware vSphere through pyVmomi (SOAP, no VDDK), shared by the VMware source and restore.

Concepts: :mod:`.session` (login with certificate checking, PropertyCollector reads, task polling),
:mod:`.inventory` (selecting VMs by name, folder or tag), :mod:`.datastore` (HTTP file access to a
datastore: ranged reads of flat disks, uploads).
"""
