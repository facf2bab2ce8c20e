fn main() {
    let _ = opguard::timeout_async!(async {}, 30);
}
