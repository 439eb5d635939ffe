//! kvm stage1
