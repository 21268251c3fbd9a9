//! `include/suanpan.h` is what cbindgen makes of this crate today. Regenerate it with
//! `scripts/gen-header` (which sets SUANPAN_BLESS=1) after changing the ABI.

use std::path::PathBuf;

#[test]
fn header_is_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    // The crate root; cbindgen follows its `mod` declarations.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen parses the crate");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = dir.join("include/suanpan.h");
    if std::env::var_os("SUANPAN_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is out of date: run scripts/gen-header and commit the result",
        path.display()
    );
}
