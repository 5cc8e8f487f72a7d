//! The part of the i8042 keyboard controller a microVM needs: the CPU reset line. The guest
//! kernel (booted with `reboot=k`) writes 0xFE to the command port to restart; runvm's
//! guests never restart, so the VMM takes it as the end of the VM.

/// The data port.
pub const DATA_PORT: u16 = 0x60;
/// The status (read) and command (write) port.
pub const COMMAND_PORT: u16 = 0x64;
/// The command that pulses the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller: no keyboard, no mouse, always ready.
#[derive(Debug, Default)]
pub struct I8042;

impl I8042 {
    /// Reads a port: status 0 (both buffers empty), no data.
    pub fn read(&self, _port: u16) -> u8 {
        0
    }

    /// Writes a port; true when the guest asked for a CPU reset.
    pub fn write(&self, port: u16, value: u8) -> bool {
        port == COMMAND_PORT && value == CMD_RESET_CPU
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_command_resets() {
        let c = I8042;
        assert!(c.write(COMMAND_PORT, 0xfe));
        assert!(!c.write(DATA_PORT, 0xfe));
        assert!(!c.write(COMMAND_PORT, 0xad));
        assert_eq!(c.read(COMMAND_PORT), 0);
    }
}
