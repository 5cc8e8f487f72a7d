//! Port-I/O devices every x86 guest expects: the 16550 serial port (the guest's console) and
//! the i8042 controller's reset line (how a guest without ACPI restarts or stops).

pub mod console;
pub mod i8042;
pub mod serial;
