//! `rkt version`.

use crate::error::RktError;

pub fn run() -> Result<(), RktError> {
    println!("rkt Version: {}", env!("CARGO_PKG_VERSION"));
    println!("appc Version: {}", appc::APPC_SPEC_VERSION);
    println!(
        "OS/Arch: {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!("Features: +KVM -TPM -SDJOURNAL");
    Ok(())
}
