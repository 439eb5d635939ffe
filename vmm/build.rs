// Snapshots name the VMM build by the GNU build ID in the executable (vmm/src/snapshot/
// identity.rs), so ask the linker for one even where it does not write one by default.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--build-id=sha1");
}
