opguard::timeout_async! {
    #[timeout(1)]
    #[safe_mps]
    async fn on_mps() -> u8 {
        1
    }
}

fn main() {}
