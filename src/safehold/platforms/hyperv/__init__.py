"""Hyper-V over PowerShell remoting: the narrow seam the Hyper-V source and restore use.

Concepts: a :class:`~safehold.platforms.hyperv.shell.PowerShell` runs one of the named
scripts in :mod:`safehold.platforms.hyperv.scripts` with parameters and returns its JSON
output (``PsrpShell`` does it over WinRM with pypsrp); ``upload`` copies a
file to the host. Everything platform-specific (checkpoints, RCT, mounting a
VHDX) lives in those scripts, so the driver above them is plain Python and a
stateful fake of this seam can stand in for a host (tests/hyperv).
"""
