//! Process start: hands the command line to [`portcullis::cli`] and turns
//! its outcome into an exit code. Nothing else lives here.

fn main() {
    std::process::exit(portcullis::cli::main());
}
