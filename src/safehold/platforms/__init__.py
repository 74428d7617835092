"""The platforms safehold talks to, one package each: sessions, clients and the platform's own calls.

Each package (``aws``, ``vmware``, ``libvirt``, ``hyperv``) is used alike by the platform's source
(``sources/``) and its destination (``restore/``), so neither of those imports the other. A platform
package knows nothing of the repository, the catalog or jobs: it raises ``safehold.errors`` and
returns plain values.
"""
