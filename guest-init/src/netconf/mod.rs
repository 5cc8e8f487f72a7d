//! Applies a [`NetSpec`] to the guest's network (to be written).

use guest_init::netspec::NetSpec;

/// Makes the guest's network match `spec`.
pub fn apply(spec: &NetSpec) -> Result<(), String> {
    spec.validate()?;
    Err("guest networking is not implemented yet".into())
}
