"""The PowerShell scripts safehold runs on a Hyper-V host, one per operation.

They target Windows PowerShell 5.1, what the default WinRM endpoint
(Microsoft.PowerShell) runs on Windows Server 2016 and later: Get-WmiObject and
the [wmi] accelerators exist there (not in PowerShell 7), -AsArray does not.

Each script starts with ``# safehold:<name>``, binds its inputs through a
``param()`` block (values travel as PSRP parameters, never pasted into the
text, so a VM name cannot inject code), stops at the first error, and prints
one JSON document. A failure inside a WMI job is rethrown with
``Write-Error -Category`` so the caller sees the category
(``ObjectNotFound``, ``PermissionDenied``, ``InvalidOperation``).

Interfaces followed (Microsoft Learn): Get-VM, Get-VMHardDiskDrive, Get-VHD,
Get-VMSnapshot, New-VM, Add-VMHardDiskDrive, Mount-VHD, Dismount-VHD,
Get-Disk; WMI root\\virtualization\\v2: Msvm_VirtualSystemSnapshotService
(CreateSnapshot with SnapshotType 32768 = recovery checkpoint, DestroySnapshot,
ConvertToReferencePoint, which takes only recovery checkpoints and deletes
them), Msvm_VirtualSystemSnapshotSettingData (ConsistencyLevel 1 application,
2 crash), Msvm_VirtualSystemReferencePointService (DestroyReferencePoint),
Msvm_VirtualSystemReferencePoint
(ResilientChangeTrackingIdentifiers, VirtualDiskIdentifiers),
Msvm_ImageManagementService.GetVirtualDiskChanges. None of this text has run
on a real host in safehold's CI (there is none here); the opt-in test
``tests/hyperv/test_real_host.py`` runs it against one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Script:
    name: str
    text: str


# Shared helper: wait for a Msvm job and turn its failure into a categorised error.
_WAIT_JOB = r"""
function Wait-SafeholdJob($result, $what) {
    if ($result.ReturnValue -eq 4096) {
        $job = [wmi]$result.Job
        while ($job.JobState -in 2, 3, 4) { Start-Sleep -Milliseconds 200; $job = [wmi]$result.Job }
        if ($job.JobState -ne 7) {
            $category = if ($job.ErrorCode -eq 32769) { 'PermissionDenied' } elseif ($job.ErrorCode -eq 32779) { 'ObjectNotFound' } else { 'InvalidOperation' }
            Write-Error -Category $category -ErrorId "safehold.$what.$($job.ErrorCode)" -Message "$what failed: $($job.ErrorDescription) (error $($job.ErrorCode))"
        }
    } elseif ($result.ReturnValue -ne 0) {
        $category = if ($result.ReturnValue -eq 32769) { 'PermissionDenied' } elseif ($result.ReturnValue -eq 32779) { 'ObjectNotFound' } else { 'InvalidOperation' }
        Write-Error -Category $category -ErrorId "safehold.$what.$($result.ReturnValue)" -Message "$what failed with return value $($result.ReturnValue)"
    }
}
"""

def _script(name: str, body: str, *, wait_job: bool = False) -> Script:
    # param() must be the first statement of a script, so the shared helper goes after it.
    first, _, rest = body.strip().partition("\n")
    helper = _WAIT_JOB.strip() + "\n" if wait_job else ""
    return Script(name, f"# safehold:{name}\n{first}\n{helper}{rest}\n")


DESCRIBE_VM = _script("describe-vm", r"""
param([string]$Name)
$ErrorActionPreference = 'Stop'
$vm = Get-VM -Name $Name
$disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object {
    $vhd = Get-VHD -Path $_.Path
    [ordered]@{ Id = $_.Id; ControllerType = "$($_.ControllerType)"; ControllerNumber = $_.ControllerNumber;
                ControllerLocation = $_.ControllerLocation; Path = $_.Path; VhdFormat = "$($vhd.VhdFormat)";
                VhdType = "$($vhd.VhdType)"; Size = $vhd.Size; FileSize = $vhd.FileSize;
                LogicalSectorSize = $vhd.LogicalSectorSize }
})
[ordered]@{ Id = "$($vm.Id)"; Name = $vm.Name; State = "$($vm.State)"; Generation = $vm.Generation;
            ProcessorCount = $vm.ProcessorCount; MemoryStartup = $vm.MemoryStartup; Disks = $disks } |
    ConvertTo-Json -Depth 5 -Compress
""")

CREATE_CHECKPOINT = _script("create-checkpoint", r"""
param([string]$VMId, [int]$ConsistencyLevel, [string]$Name)
$ErrorActionPreference = 'Stop'
$ns = 'root\virtualization\v2'
$system = Get-WmiObject -Namespace $ns -Class Msvm_ComputerSystem -Filter "Name='$([guid]$VMId)'"
if (-not $system) { Write-Error -Category ObjectNotFound -ErrorId 'safehold.vm-not-found' -Message "no virtual machine with id $VMId" }
$settings = ([wmiclass]"\\.\$($ns):Msvm_VirtualSystemSnapshotSettingData").CreateInstance()
$settings.ConsistencyLevel = $ConsistencyLevel
$settings.IgnoreNonSnapshottableDisks = $true
$service = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemSnapshotService
$result = $service.CreateSnapshot($system, $settings.GetText(1), 32768)
Wait-SafeholdJob $result 'create-checkpoint'
# The new checkpoint's settings: the method's output when it finished at once, else the job's
# affected element (never "the newest checkpoint", which another product may have just made).
$created = if ($result.ResultingSnapshot) { [wmi]$result.ResultingSnapshot } else {
    ([wmi]$result.Job).GetRelated('Msvm_VirtualSystemSettingData') | Select-Object -First 1 }
$snapshot = Get-VMSnapshot -Id ([guid]$created.ConfigurationID)
Rename-VMSnapshot -VMSnapshot $snapshot -NewName $Name
[ordered]@{ Id = "$($snapshot.Id)"; Name = $Name; SnapshotType = "$($snapshot.SnapshotType)"; ConsistencyLevel = $ConsistencyLevel;
            HardDrives = @($snapshot.HardDrives | ForEach-Object { [ordered]@{ Id = $_.Id; Path = $_.Path;
                ControllerType = "$($_.ControllerType)"; ControllerNumber = $_.ControllerNumber; ControllerLocation = $_.ControllerLocation } }) } |
    ConvertTo-Json -Depth 5 -Compress
""", wait_job=True)

LIST_CHECKPOINTS = _script("list-checkpoints", r"""
param([string]$VMId)
$ErrorActionPreference = 'Stop'
# -InputObject keeps a one-element array an array (Windows PowerShell 5.1 has no -AsArray).
ConvertTo-Json -Depth 3 -Compress -InputObject @(Get-VMSnapshot -VM (Get-VM -Id $VMId) | ForEach-Object {
    [ordered]@{ Id = "$($_.Id)"; Name = $_.Name; SnapshotType = "$($_.SnapshotType)"; CreationTime = $_.CreationTime.ToString('o') } })
""")

REMOVE_CHECKPOINT = _script("remove-checkpoint", r"""
param([string]$VMId, [string]$SnapshotId)
$ErrorActionPreference = 'Stop'
$snapshot = Get-WmiObject -Namespace 'root\virtualization\v2' -Class Msvm_VirtualSystemSettingData -Filter "ConfigurationID='$([guid]$SnapshotId)'"
if (-not $snapshot) { [ordered]@{ Removed = $false } | ConvertTo-Json -Compress; return }
$service = Get-WmiObject -Namespace 'root\virtualization\v2' -Class Msvm_VirtualSystemSnapshotService
Wait-SafeholdJob ($service.DestroySnapshot($snapshot)) 'remove-checkpoint'
[ordered]@{ Removed = $true } | ConvertTo-Json -Compress
""", wait_job=True)

CONVERT_TO_REFERENCE_POINT = _script("convert-to-reference-point", r"""
param([string]$VMId, [string]$SnapshotId)
$ErrorActionPreference = 'Stop'
$ns = 'root\virtualization\v2'
$snapshot = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemSettingData -Filter "ConfigurationID='$([guid]$SnapshotId)'"
if (-not $snapshot) { Write-Error -Category ObjectNotFound -ErrorId 'safehold.checkpoint-not-found' -Message "no checkpoint $SnapshotId" }
# ConvertToReferencePoint belongs to the snapshot service and takes only recovery checkpoints;
# ReferencePointSettings is optional (an empty string).
$service = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemSnapshotService
$result = $service.ConvertToReferencePoint($snapshot, '')
Wait-SafeholdJob $result 'convert-to-reference-point'
$point = if ($result.ResultingReferencePoint) { [wmi]$result.ResultingReferencePoint } else {
    [wmi](([wmi]$result.Job).GetRelated('Msvm_VirtualSystemReferencePoint') | Select-Object -First 1).__PATH }
[ordered]@{ InstanceID = $point.InstanceID; ReferencePointType = $point.ReferencePointType; ConsistencyLevel = $point.ConsistencyLevel;
            VirtualDiskIdentifiers = @($point.VirtualDiskIdentifiers); ResilientChangeTrackingIdentifiers = @($point.ResilientChangeTrackingIdentifiers) } |
    ConvertTo-Json -Depth 3 -Compress
""", wait_job=True)

REMOVE_REFERENCE_POINT = _script("remove-reference-point", r"""
param([string]$VMId, [string]$InstanceID)
$ErrorActionPreference = 'Stop'
$ns = 'root\virtualization\v2'
$point = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemReferencePoint | Where-Object { $_.InstanceID -eq $InstanceID }
if (-not $point) { [ordered]@{ Removed = $false } | ConvertTo-Json -Compress; return }
$service = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemReferencePointService
Wait-SafeholdJob ($service.DestroyReferencePoint($point)) 'remove-reference-point'
[ordered]@{ Removed = $true } | ConvertTo-Json -Compress
""", wait_job=True)

DISK_CHANGES = _script("disk-changes", r"""
param([string]$Path, [string]$LimitId, [uint64]$ByteOffset, [uint64]$ByteLength)
$ErrorActionPreference = 'Stop'
$service = Get-WmiObject -Namespace 'root\virtualization\v2' -Class Msvm_ImageManagementService
$result = $service.GetVirtualDiskChanges($Path, $LimitId, $null, $ByteOffset, $ByteLength)
Wait-SafeholdJob $result 'disk-changes'
[ordered]@{ ProcessedByteLength = $result.ProcessedByteLength; ChangedByteOffsets = @($result.ChangedByteOffsets);
            ChangedByteLengths = @($result.ChangedByteLengths) } | ConvertTo-Json -Depth 3 -Compress
""", wait_job=True)

# Reading: mount the checkpoint's (now read-only) VHDX read-only without a drive letter and
# read the disk device, so the bytes are the virtual disk's, whatever the VHDX layout.
MOUNT_DISK = _script("mount-disk", r"""
param([string]$Path)
$ErrorActionPreference = 'Stop'
$disk = Mount-VHD -Path $Path -ReadOnly -NoDriveLetter -Passthru | Get-Disk
[ordered]@{ Path = $Path; Number = $disk.Number; Size = $disk.Size; LogicalSectorSize = $disk.LogicalSectorSize } |
    ConvertTo-Json -Compress
""")

READ_DISK = _script("read-disk", r"""
param([int]$Number, [uint64]$Offset, [int]$Length)
$ErrorActionPreference = 'Stop'
$stream = [System.IO.File]::Open("\\.\PhysicalDrive$Number", 'Open', 'Read', 'ReadWrite')
try {
    $buffer = New-Object byte[] $Length
    [void]$stream.Seek([int64]$Offset, 'Begin')
    $done = 0
    while ($done -lt $Length) { $n = $stream.Read($buffer, $done, $Length - $done); if ($n -le 0) { break }; $done += $n }
} finally { $stream.Dispose() }
[ordered]@{ Offset = $Offset; Length = $done; Data = [Convert]::ToBase64String($buffer, 0, $done) } | ConvertTo-Json -Compress
""")

DISMOUNT_DISK = _script("dismount-disk", r"""
param([string]$Path)
$ErrorActionPreference = 'Stop'
$mounted = (Get-VHD -Path $Path).Attached
if ($mounted) { Dismount-VHD -Path $Path }
[ordered]@{ Dismounted = [bool]$mounted } | ConvertTo-Json -Compress
""")

NEW_FOLDER = _script("new-folder", r"""
param([string]$Path)
$ErrorActionPreference = 'Stop'
$item = New-Item -ItemType Directory -Path $Path -Force
[ordered]@{ Path = $item.FullName } | ConvertTo-Json -Compress
""")

REMOVE_FILES = _script("remove-files", r"""
param([string[]]$Paths)
$ErrorActionPreference = 'Stop'
$removed = @($Paths | Where-Object { Test-Path -LiteralPath $_ } | ForEach-Object { Remove-Item -LiteralPath $_ -Force; $_ })
[ordered]@{ Removed = $removed } | ConvertTo-Json -Compress
""")

NEW_VM = _script("new-vm", r"""
param([string]$Name, [string]$Path, [int]$Generation, [int64]$MemoryStartupBytes, [int]$ProcessorCount, [object[]]$Disks)
$ErrorActionPreference = 'Stop'
if (Get-VM -Name $Name -ErrorAction SilentlyContinue) {
    Write-Error -Category ResourceExists -ErrorId 'safehold.vm-exists' -Message "a virtual machine named $Name exists" }
$vm = New-VM -Name $Name -Path $Path -Generation $Generation -MemoryStartupBytes $MemoryStartupBytes -NoVHD
Set-VMProcessor -VM $vm -Count $ProcessorCount
foreach ($disk in $Disks) {
    Add-VMHardDiskDrive -VM $vm -ControllerType $disk.ControllerType -ControllerNumber $disk.ControllerNumber `
        -ControllerLocation $disk.ControllerLocation -Path $disk.Path
}
[ordered]@{ Id = "$($vm.Id)"; Name = $vm.Name; State = "$($vm.State)" } | ConvertTo-Json -Compress
""")

ALL = (DESCRIBE_VM, CREATE_CHECKPOINT, LIST_CHECKPOINTS, REMOVE_CHECKPOINT, CONVERT_TO_REFERENCE_POINT,
       REMOVE_REFERENCE_POINT, DISK_CHANGES, MOUNT_DISK, READ_DISK, DISMOUNT_DISK, NEW_FOLDER, REMOVE_FILES, NEW_VM)
