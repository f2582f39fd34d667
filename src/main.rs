//! The `devami` binary: a thin wrapper over the library (see `cli.rs`).

fn main() {
    std::process::exit(devami::cli::main(std::env::args_os()));
}
