//! Misused macro syntax fails to compile with a message showing the right forms.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    #[cfg(feature = "tch")]
    t.compile_fail("tests/ui-tch/*.rs");
    #[cfg(not(feature = "tch"))]
    t.compile_fail("tests/ui-no-tch/*.rs");
    // rustc lists tokio's `Instant` among the types a deadline can be when
    // opguard depends on tokio.
    #[cfg(feature = "tokio")]
    t.compile_fail("tests/ui-tokio/*.rs");
    #[cfg(not(feature = "tokio"))]
    t.compile_fail("tests/ui-no-tokio/*.rs");
}
