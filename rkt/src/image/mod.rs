//! Image formats the store accepts: appc ACIs (`aci`), OCI images (`oci`) and
//! Docker images (`docker`, which also maps Docker/OCI configs to appc apps).

pub mod aci;
pub mod docker;
pub mod members;
pub mod names;
pub mod oci;
pub mod reference;
