//! The `testsvc` binary: see the library for the subcommands.

fn main() {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(testsvc::run(args));
}
