//! Arbitrary bytes as a df12 blob: parse must refuse cleanly or every kernel must decode
//! the same values, never panic or read out of bounds; what decodes re-encodes to a blob
//! that decodes to the same values.
//! Run: `cd fuzz && cargo +nightly fuzz run df12_decode`.
#![no_main]

use suanpan::backend::cpu::dfloat::Df12Decode;
use libfuzzer_sys::fuzz_target;
use suanpan::backend::cpu::dfloat::df12_kernel::Kernel;
use suanpan::dfloat::df12::{encode, Df12View};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = Df12View::parse(data) else {
        return;
    };
    let want = v.decode().expect("a parsed blob decodes");
    for k in Kernel::available() {
        let mut out = vec![0u16; v.n];
        v.decode_range_with(k, 0..v.n, &mut out).expect("decode");
        assert_eq!(out, want, "{k:?}");
        if v.n > 3 {
            let mut part = vec![0u16; v.n - 3];
            v.decode_range_with(k, 1..v.n - 2, &mut part).expect("decode part");
            assert_eq!(part, want[1..v.n - 2], "{k:?} part");
        }
    }
    let again = encode(&want).to_bytes();
    assert_eq!(Df12View::parse(&again).expect("re-encoded").decode().expect("decode"), want);
});
