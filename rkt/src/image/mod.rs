//! Image formats the store accepts. Only ACIs for now; Docker and OCI images
//! will live beside `aci` as `docker` and `oci`.

pub mod aci;
