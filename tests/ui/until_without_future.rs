use std::time::{Duration, Instant};

fn main() {
    let deadline = Instant::now() + Duration::from_secs(5);
    let _ = opguard::timeout_async!(until = deadline);
    let _ = opguard::timeout_async!(label = "fetch", until = deadline);
}
