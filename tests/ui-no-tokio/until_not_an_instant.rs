fn main() {
    // A deadline is an Instant; a number of seconds goes without `until`.
    let _ = opguard::timeout_async!(until = 5, async { 1 });
}
