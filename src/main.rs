//! The `dify-bundle` command: a thin layer over the library that parses flags, shows
//! progress and prints results.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
