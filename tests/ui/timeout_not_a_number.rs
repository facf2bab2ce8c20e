fn main() {
    let _ = opguard::timeout_async!("30", async {});
}
