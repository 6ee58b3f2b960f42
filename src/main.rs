//! The `tern` binary: `tern serve` runs the server (on the embedded store, or
//! on ScyllaDB as a cluster node); the other subcommands are a small client
//! for chatting from a terminal.

mod cli;
mod trim;

fn main() -> std::process::ExitCode {
    cli::main()
}
