//! Arbitrary bytes as a DFloat11 blob: parse and decode must refuse cleanly or succeed
//! consistently, never panic or read out of bounds.
//! Run: `cd fuzz && cargo +nightly fuzz run df11_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suanpan::dfloat::{encode, Df11View};
use suanpan::backend::cpu::dfloat::{decode, Df11Decoder, Kernel};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = Df11View::parse(data) else {
        return;
    };
    let Ok(dec) = Df11Decoder::new(v.lengths) else {
        return;
    };
    // n ≤ data.len(): parse checked the blob holds n sign|mantissa bytes.
    let mut one = vec![0u16; v.n];
    let r1 = dec.decode_into(v, &mut one);
    let mut two = vec![0u16; v.n];
    let r2 = dec.decode_parallel(v, &mut two, 3);
    assert_eq!(r1.is_ok(), r2.is_ok());
    // The fast kernel (default) agrees with the one-code-at-a-time reference and the
    // previous 8-bit kernel: same values, or an error from all.
    for kernel in [Kernel::Reference, Kernel::Multi12] {
        let mut other = vec![0u16; v.n];
        let r = dec.decode_parallel_with(kernel, v, &mut other, 2);
        assert_eq!(r.is_ok(), r1.is_ok(), "{kernel:?}");
        if r.is_ok() {
            assert_eq!(other, one, "{kernel:?}");
        }
    }
    if r1.is_ok() {
        assert_eq!(one, two);
        // What decodes re-encodes and decodes to the same values.
        let again = encode(&one).expect("encode");
        assert_eq!(decode(&again).expect("decode"), one);
    }
});
