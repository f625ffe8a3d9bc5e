//! Placeholder until the local-cluster issue builds the real service.
fn main() -> std::process::ExitCode {
    eprintln!("checkout: the example service is not built yet (see the local-cluster issue)");
    std::process::ExitCode::FAILURE
}
