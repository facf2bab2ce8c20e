fn main() {
    let _ = opguard::timeout_async!(label = 5, 1, async {});
}
