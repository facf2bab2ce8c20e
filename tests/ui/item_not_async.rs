opguard::timeout_async! {
    #[timeout(1)]
    fn not_async() -> u8 {
        1
    }
}

fn main() {}
