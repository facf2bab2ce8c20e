fn main() {
    let _ = opguard::timeout_async!();
}
