fn main() {
    let _ = opguard::timeout_async!(1, async {});
    let _ = &__OPGUARD_SITE;
}
