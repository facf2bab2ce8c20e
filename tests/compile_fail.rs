//! Misused macro syntax fails to compile with a message showing the right forms.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    #[cfg(feature = "tch")]
    t.compile_fail("tests/ui-tch/*.rs");
    #[cfg(not(feature = "tch"))]
    t.compile_fail("tests/ui-no-tch/*.rs");
}
