fn main() {
    let name = String::from("fetch");
    let _ = opguard::timeout_async!(label = &name, 1, async {});
}
