// Python's `@timeout_async(seconds=30)` spelled inside the macro: each form
// says that the timeout goes in by itself (not "cannot find value `seconds`");
// a label given twice is named as such.
async fn quote() -> f64 {
    101.25
}

opguard::timeout_async! {
    #[timeout(seconds = 30)]
    async fn fetch() -> f64 {
        quote().await
    }
}

fn main() {
    let _ = opguard::timeout_async!(seconds = 30, quote());
    let _ = opguard::timeout_async!(label = "quote", timeout = 0.5, quote());
    // Not "no `label = ..`": it has one, once.
    let _ = opguard::timeout_async!(label = "quote", label = "price", 0.5, quote());
}
