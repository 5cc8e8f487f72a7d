//! The `runvm` binary: hands the command line to [`runvm::cli`] and exits with its status.

use std::process::ExitCode;

fn main() -> ExitCode {
    runvm::cli::main()
}
