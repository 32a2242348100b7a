//! `xinference`: the client command line (see `xi_client::cli`); `hash-password` is the
//! launchers' one implementation (`xi_launch::hash_password`).

fn main() -> std::process::ExitCode {
    xi_client::cli::main(|password| xi_launch::hash_password("xinference", password))
}
