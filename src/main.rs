//! The `frugal` command-line tool.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Exit status by kind of failure, so scripts can tell a bad model from a bad input or a
/// missing device (documented in the README; 2 is clap's usage error).
fn exit_code(e: &anyhow::Error) -> u8 {
    use frugal::Error as E;
    match e.chain().find_map(|c| c.downcast_ref::<E>()) {
        Some(
            E::InvalidModel { .. }
            | E::Malformed(_)
            | E::Unsupported { .. }
            | E::Opset { .. }
            | E::Shape { .. }
            | E::TooLarge { .. },
        ) => 3,
        Some(E::Input { .. }) => 4,
        Some(E::OutOfBudget { .. } | E::OverMemoryLimit { .. } | E::DeviceLimit { .. }) => 5,
        Some(E::BackendNotCompiled(_) | E::BackendUnavailable { .. } | E::Backend { .. }) => 6,
        _ => 1,
    }
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`frugal plan ... | head`) would
    // panic in `println!`; with the default action the process ends quietly, like other
    // command-line tools.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
