#![deny(unused_must_use)]

fn main() {
    opguard::timeout_async!(1, async {});
}
