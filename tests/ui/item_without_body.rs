opguard::timeout_async! {
    #[timeout(1)]
    async fn no_body() -> u8;
}

fn main() {}
