//! The `tern` binary: `tern serve` runs the server on the embedded store; the
//! other subcommands are a small client for chatting from a terminal.

mod cli;
mod trim;

/// mimalloc instead of glibc's malloc: see docs/PERFORMANCE.md (issue 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
