//! Can this host run our VMs? The checks of docs/foundation.md "Host checks", in that order,
//! each with a one-line message that names the fix. Shared by `rkt-vmm`, stage1 and `rkt run`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kvm_ioctls::{Cap, Kvm, VmFd};
use thiserror::Error;

/// Environment variable that replaces `/dev/kvm` (the tests use it to provoke each message).
pub const KVM_DEVICE_ENV: &str = "RKT_KVM_DEVICE";

/// The KVM API version every KVM since Linux 2.6.22 reports.
pub const KVM_API_VERSION: i32 = 12;

/// Present when the host's KVM is PVM, which runs only PVM guest kernels at speed.
const PVM_MODULE_DIR: &str = "/sys/module/kvm_pvm";

/// Capabilities the VMM cannot work without, with the name printed when one is missing.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::SetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

/// Why this host cannot run a VM, one variant per check.
#[derive(Debug, Error)]
pub enum HostCheckError {
    /// No device node (or no driver behind it).
    #[error("{} does not exist: load the kvm-intel or kvm-amd module and enable VT-x/AMD-V in the firmware", .0.display())]
    KvmMissing(PathBuf),
    /// The node exists but we may not open it read-write.
    #[error("no permission to open {} read-write: run as root or add the user to the kvm group", .0.display())]
    NoPermission(PathBuf),
    /// Opening failed for another reason.
    #[error("cannot open {}: {}: check that it is the KVM device", .0.display(), .1)]
    OpenFailed(PathBuf, io::Error),
    /// The file opened but does not answer KVM ioctls.
    #[error("{} is not a KVM device: point {KVM_DEVICE_ENV} at /dev/kvm or unset it", .0.display())]
    NotKvm(PathBuf),
    /// An API version other than 12.
    #[error("the host's KVM API version is {0}, but {KVM_API_VERSION} is required: use a newer host kernel")]
    ApiVersion(i32),
    /// A capability the VMM relies on is absent.
    #[error("the host's KVM lacks {0}: use a newer host kernel with full x86 KVM support")]
    MissingCapability(&'static str),
    /// The host's KVM is PVM.
    #[error("this host's KVM is PVM (kvm_pvm) and runs only PVM guest kernels: run on a host with hardware VMX/SVM (bare metal or nested VMX/SVM)")]
    PvmHost,
    /// `KVM_CREATE_VM` said EBUSY: VT-x/AMD-V is held by another hypervisor.
    #[error("KVM cannot create a VM because another hypervisor (e.g. VirtualBox) holds VT-x/AMD-V: stop it and retry")]
    HypervisorBusy,
    /// `KVM_CREATE_VM` failed otherwise.
    #[error("KVM cannot create a VM: {0}: check the kernel log (dmesg) for kvm errors")]
    CreateVmFailed(io::Error),
}

/// Runs every host check and returns the opened KVM handle.
pub fn check_host() -> Result<Kvm, HostCheckError> {
    open_host().map(|(kvm, _vm)| kvm)
}

/// Runs every host check and keeps the VM that the last check created, so booting does not pay
/// for `KVM_CREATE_VM` twice.
pub(crate) fn open_host() -> Result<(Kvm, VmFd), HostCheckError> {
    let device = std::env::var_os(KVM_DEVICE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/kvm"));
    open_host_at(&device, Path::new(PVM_MODULE_DIR))
}

/// The host checks that cost next to nothing: `/dev/kvm` there and ours to open, its API
/// version and capabilities, not a PVM host. Everything [`check_host`] does but create a VM
/// (which the boot does anyway): for callers that must refuse a host before they do other work,
/// such as the kvm stage1 before it sets up a pod's network.
pub fn check_host_early() -> Result<(), HostCheckError> {
    let device = std::env::var_os(KVM_DEVICE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/kvm"));
    open_kvm_at(&device, Path::new(PVM_MODULE_DIR)).map(drop)
}

fn open_host_at(device: &Path, pvm_module_dir: &Path) -> Result<(Kvm, VmFd), HostCheckError> {
    let kvm = open_kvm_at(device, pvm_module_dir)?;
    let vm = kvm
        .create_vm()
        .map_err(|e| classify_create_vm_error(e.errno()))?;
    Ok((kvm, vm))
}

fn open_kvm_at(device: &Path, pvm_module_dir: &Path) -> Result<Kvm, HostCheckError> {
    if !device.exists() {
        return Err(HostCheckError::KvmMissing(device.to_path_buf()));
    }
    let c_path = CString::new(device.as_os_str().as_bytes())
        .map_err(|_| HostCheckError::NotKvm(device.to_path_buf()))?;
    let kvm = Kvm::new_with_path(&c_path)
        .map_err(|e| classify_open_error(device, io::Error::from_raw_os_error(e.errno())))?;

    let version = kvm.get_api_version();
    if version < 0 {
        return Err(HostCheckError::NotKvm(device.to_path_buf()));
    }
    if version != KVM_API_VERSION {
        return Err(HostCheckError::ApiVersion(version));
    }
    if let Some((_, name)) = REQUIRED_CAPS
        .iter()
        .find(|(cap, _)| !kvm.check_extension(*cap))
    {
        return Err(HostCheckError::MissingCapability(name));
    }
    if pvm_module_dir.exists() {
        return Err(HostCheckError::PvmHost);
    }
    Ok(kvm)
}

fn classify_open_error(device: &Path, err: io::Error) -> HostCheckError {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            HostCheckError::NoPermission(device.to_path_buf())
        }
        // ENXIO/ENODEV: the node exists but no driver answers (module not loaded).
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
            HostCheckError::KvmMissing(device.to_path_buf())
        }
        _ => HostCheckError::OpenFailed(device.to_path_buf(), err),
    }
}

fn classify_create_vm_error(errno: i32) -> HostCheckError {
    if errno == libc::EBUSY {
        HostCheckError::HypervisorBusy
    } else {
        HostCheckError::CreateVmFailed(io::Error::from_raw_os_error(errno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_names_the_modules() {
        let dir = std::env::temp_dir();
        let err = open_host_at(&dir.join("no-such-kvm-device"), &dir).unwrap_err();
        assert!(matches!(err, HostCheckError::KvmMissing(_)));
        assert!(err.to_string().contains("kvm-intel or kvm-amd"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_kvm_is_refused() {
        // /dev/null opens read-write but answers no KVM ioctl.
        let err = open_host_at(Path::new("/dev/null"), Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, HostCheckError::NotKvm(_)), "{err}");
    }

    #[test]
    fn open_errors_map_to_the_permission_and_missing_variants() {
        let p = Path::new("/dev/kvm");
        let e = classify_open_error(p, io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, HostCheckError::NoPermission(_)));
        assert!(e.to_string().contains("kvm group"));
        let e = classify_open_error(p, io::Error::from_raw_os_error(libc::ENXIO));
        assert!(matches!(e, HostCheckError::KvmMissing(_)));
        let e = classify_open_error(p, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, HostCheckError::OpenFailed(..)));
    }

    #[test]
    fn ebusy_on_create_vm_names_the_other_hypervisor() {
        let e = classify_create_vm_error(libc::EBUSY);
        assert!(matches!(e, HostCheckError::HypervisorBusy));
        assert!(e.to_string().contains("VirtualBox"));
        assert!(matches!(
            classify_create_vm_error(libc::ENOMEM),
            HostCheckError::CreateVmFailed(_)
        ));
    }

    #[test]
    fn messages_are_one_line() {
        let all = [
            HostCheckError::KvmMissing("/dev/kvm".into()),
            HostCheckError::NoPermission("/dev/kvm".into()),
            HostCheckError::ApiVersion(11),
            HostCheckError::MissingCapability("KVM_CAP_IRQCHIP"),
            HostCheckError::PvmHost,
            HostCheckError::HypervisorBusy,
        ];
        for e in all {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains(": "), "message should name a fix: {msg}");
        }
        assert!(HostCheckError::PvmHost.to_string().contains("VMX/SVM"));
    }
}
