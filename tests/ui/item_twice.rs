opguard::timeout_async! {
    #[timeout(1)]
    #[timeout(2)]
    async fn timed_twice() -> u8 {
        1
    }
}

fn main() {}
