// Functions the item form cannot wrap say so, rather than failing inside
// the expansion.

opguard::timeout_async! {
    #[timeout(1)]
    async fn shown() -> impl std::fmt::Display {
        1
    }
}

opguard::timeout_async! {
    #[timeout(1)]
    async fn parsed() -> Result<(u8, impl std::fmt::Display), std::num::ParseIntError> {
        Ok((1, "2".parse::<u8>()?))
    }
}

opguard::timeout_async! {
    #[timeout(1)]
    async unsafe fn raw(p: *const u8) -> u8 {
        *p
    }
}

fn main() {}
