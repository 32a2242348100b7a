//! `xinference`: the client command line (see `xi_client::cli`).

fn main() -> std::process::ExitCode {
    xi_client::cli::main()
}
