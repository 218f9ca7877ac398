//! The `astrgate` binary: parse the command line and hand over to [`astrgate::cli`].

fn main() -> std::process::ExitCode {
    astrgate::cli::main()
}
