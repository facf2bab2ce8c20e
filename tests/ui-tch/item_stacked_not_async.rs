opguard::safe_mps! {
    #[safe_mps]
    #[timeout(1)]
    fn not_async() -> u8 {
        1
    }
}

fn main() {}
